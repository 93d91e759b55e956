"""English and Japanese: the browser's language picks, the switcher overrides; the catalogue is complete and
its committed compiled form (django.mo) matches its source (django.po), so no deployment compiles it."""

import ast
import gettext
import re
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import translation

from planner import roi
from planner.dashboard import wording
from tests.planner.factories import measured_request, sweep

LOCALE = Path(settings.BASE_DIR) / "planner" / "locale" / "ja" / "LC_MESSAGES"


def _po_entries(path: Path) -> dict[str, str]:
    """msgid → msgstr (msgstr[0] for plurals) of a .po file; a small reader for what makemessages writes."""
    entries, field, current = {}, None, {}
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip():
            if current.get("msgid"):
                entries[current["msgid"]] = current.get("msgstr", "")
            current, field = {}, None
            continue
        if line.startswith("#"):
            if line.startswith("#, ") and "fuzzy" in line:
                current["fuzzy"] = True
            continue
        match = re.match(r'^(msgid|msgid_plural|msgstr|msgstr\[0\])\s+(".*")$', line)
        if match:
            field = {"msgstr[0]": "msgstr"}.get(match.group(1), match.group(1))
            current[field] = ast.literal_eval(match.group(2))
        elif line.startswith('"') and field:
            current[field] += ast.literal_eval(line)
        assert not current.get("fuzzy"), f"fuzzy entry in {path}: {line}"
    return entries


def test_every_message_is_translated_and_the_mo_is_compiled_from_the_po():
    entries = _po_entries(LOCALE / "django.po")
    assert len(entries) > 200
    untranslated = [msgid for msgid, msgstr in entries.items() if not msgstr]
    assert not untranslated, untranslated
    with open(LOCALE / "django.mo", "rb") as mo:
        catalog = gettext.GNUTranslations(mo)._catalog
    compiled = {
        k if isinstance(k, str) else k[0]: v
        for k, v in catalog.items()
        if k and (k if isinstance(k, str) else k[1] == 0)
    }
    stale = {msgid for msgid, msgstr in entries.items() if compiled.get(msgid) != msgstr}
    assert not stale, f"django.mo is out of date; run compilemessages. Differs: {sorted(stale)[:5]}"


def test_every_template_string_is_in_the_catalogue():
    """A {% translate "…" %} added to a template without re-running makemessages would show in English."""
    entries = _po_entries(LOCALE / "django.po")
    templates = Path(settings.BASE_DIR, "planner", "templates").rglob("*.html")
    missing = set()
    for template in templates:
        for match in re.finditer(r'{%\s*(?:translate|trans)\s+(["\'])(.+?)\1', template.read_text()):
            if match.group(2).replace("%", "%%") not in entries and match.group(2) not in entries:
                missing.add((template.name, match.group(2)))
    assert not missing, sorted(missing)


@pytest.fixture
def scenario(user, cpu_hardware):
    return measured_request(
        owner=user,
        hardware=cpu_hardware,
        models=[(0.90, sweep(20)), (0.89, sweep(10))],
        engineering_hours=Decimal(10),
    )


def test_the_browsers_language_picks_japanese(client_logged_in, scenario):
    body = client_logged_in.get(
        reverse("planner:request-detail", args=[scenario.pk]), HTTP_ACCEPT_LANGUAGE="ja,en;q=0.8"
    ).content.decode()
    assert '<html lang="ja">' in body
    for text in [
        "圧縮ROIプランナー",
        "推奨",
        "月間削減額",
        "回収期間",
        "12 か月のROI",
        "維持された精度",
        "ピーク時のレプリカ数",
    ]:
        assert text in body, text
    # The figures and technique names are the same in every language.
    assert "$280.32" in body and "quantize.dynamic-int8" in body and "3.6 か月" in body
    assert (
        "quantize.dynamic-int8 への切り替えを推奨します" in body and "3.6 か月で投資を回収できます。" in body
    )
    for english in ["Monthly savings", "Recommendation", "Payback", "What if"]:
        assert english not in body, english


def test_the_switcher_overrides_the_browser(client_logged_in, scenario):
    url = reverse("planner:request-detail", args=[scenario.pk])
    page = client_logged_in.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert 'action="/i18n/setlang/"' in page and 'name="language" value="ja"' in page
    response = client_logged_in.post(reverse("set_language"), {"language": "ja", "next": url})
    assert response.status_code == 302 and response.url == url
    assert "月間削減額" in client_logged_in.get(url, HTTP_ACCEPT_LANGUAGE="en").content.decode()
    client_logged_in.post(reverse("set_language"), {"language": "en", "next": url})
    assert "Monthly savings" in client_logged_in.get(url, HTTP_ACCEPT_LANGUAGE="ja").content.decode()


def test_the_switcher_works_before_logging_in(client, db):
    response = client.post(reverse("set_language"), {"language": "ja", "next": reverse("login")})
    assert response.status_code == 302
    body = client.get(reverse("login")).content.decode()
    assert "ログイン" in body and "パスワード" in body  # ours, and Django's own catalogue


def test_japanese_portfolio_form_and_blockers(client_logged_in, scenario, user, cpu_hardware, tiny_model_dir):
    measured_request(
        owner=user, hardware=cpu_hardware, title="Blocked", models=[(0.9, sweep(40)), (0.8, sweep(10))]
    )
    ja = {"HTTP_ACCEPT_LANGUAGE": "ja"}
    body = client_logged_in.get(reverse("planner:portfolio"), **ja).content.decode()
    assert "ポートフォリオ" in body and "どの候補も満たせない目標" in body and "完了" in body
    assert "p95レイテンシ目標 30 ms: 精度の下限を満たす中で最も速いモデル（baseline）" in body
    form = client_logged_in.get(reverse("planner:request-create"), **ja).content.decode()
    assert (
        "1日あたりのリクエスト数" in form
        and "固定ハッシュで選んだ20%" in form
        and "p95レイテンシ目標（ms）" in form
    )


def test_csv_columns_stay_stable_in_japanese(client_logged_in, scenario):
    response = client_logged_in.get(
        reverse("planner:request-csv", args=[scenario.pk]), HTTP_ACCEPT_LANGUAGE="ja"
    )
    header = b"".join(response.streaming_content).decode("utf-8").splitlines()[0]
    assert header.startswith("\ufeffrequest_id,request_title,scenario,currency")


def test_blocker_sentences_are_the_catalogues_english_word_for_word_and_exist_in_japanese():
    """roi gives the blockers as data; wording alone words them, in English as the msgids say."""

    def model(key, accuracy, p95_batch1):
        latency = [roi.LatencyPoint(1, p95_batch1 * 0.8, p95_batch1, p95_batch1 * 1.1)]
        latency.append(roi.LatencyPoint(8, p95_batch1 * 2, p95_batch1 * 2.5, p95_batch1 * 3))  # over 30 ms
        return roi.ModelMeasurement(key, f"m{key}", key == "1", accuracy, latency, device_hours=0.1)

    e = roi.Economics(
        requests_per_day=86_400, price_per_hour=1, p95_target_ms=30, accuracy_floor_pct_of_baseline=97
    )
    # Floor 0.90 × 97% = 87.3%. m3 misses it by 0.01 points and the target by 0.04 ms.
    report = roi.evaluate([model("1", 0.90, 40.0), model("2", 0.80, 31.0), model("3", 0.8729, 30.04)], e)
    no_batch = "no batch size meets the 30 ms p95 target"
    english = {
        "1": ("p95 at batch 1 is 40.0 ms, 10.0 ms over the 30 ms target", no_batch),
        "2": (
            "accuracy 80.0% is 7.3 points below the floor of 87.3%",
            "p95 at batch 1 is 31.0 ms, 1.0 ms over the 30 ms target",
            no_batch,
        ),
        "3": (
            "accuracy 87.3% is less than 0.1 points below the floor of 87.3%",
            "p95 at batch 1 is 30.0 ms, less than 0.1 ms over the 30 ms target",
            no_batch,
        ),
    }
    blocking = roi.blocking_targets(report)
    with translation.override("en"):
        assert {row.key: wording.blocker_sentences(row, report) for row in report.rows} == english
        assert wording.recommendation_sentence(report, "USD") == "No model meets the targets."
        assert wording.blocking_sentences(blocking) == [
            "p95 latency target 30 ms: the fastest model that keeps the accuracy floor (m1) takes 40.0 ms "
            "at batch 1, 10.0 ms over."
        ]
    with translation.override("ja"):
        japanese = {row.key: wording.blocker_sentences(row, report) for row in report.rows}
        assert japanese["1"][0] == "バッチサイズ1のp95は 40.0 ms で、目標 30 ms を 10.0 ms 超えています"
        assert "0.1未満" in japanese["3"][0] and "0.1未満" in japanese["3"][1]
        for key, sentences in english.items():
            assert all(ja != en for ja, en in zip(japanese[key], sentences, strict=True)), key
        assert wording.recommendation_sentence(report, "USD") == "目標を満たすモデルはありません。"
        assert wording.blocking_sentences(blocking)[0].startswith(
            "p95レイテンシ目標 30 ms: 精度の下限を満たす"
        )
