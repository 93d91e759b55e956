def pytest_configure(config):
    # Registered here as well as in pyproject.toml, so that --strict-markers accepts it either way.
    config.addinivalue_line(
        "markers", "browser: drives a real headless Chromium (Debian's /usr/bin/chromium)"
    )
