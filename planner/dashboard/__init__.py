"""What the request and portfolio pages show: view models, wording, charts and exports."""
