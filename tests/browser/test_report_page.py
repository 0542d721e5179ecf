"""The report page in a real browser: cards render their pictures, sorting and the flag filter work."""

from patronus_diffusion.cli.main import main


def test_report_cards_render_and_sort_in_chromium(browser, tiny_run, tmp_path):
    assert main(["report", "--run", str(tiny_run), "--out", str(tmp_path / "r"), "--quick", "--no-progress",
                 "--device", "cpu"]) == 0
    page = browser.new_page()
    requests = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto((tmp_path / "r" / "index.html").as_uri())
    cards = page.locator("div.card")
    assert cards.count() == 6
    first = cards.first.locator("img.patches")
    assert first.evaluate("img => img.complete && img.naturalWidth > 0")  # the picture decoded
    assert cards.first.locator("img.strip").evaluate("img => img.naturalWidth > 0")
    assert cards.first.locator("img.when").evaluate("img => img.naturalWidth > 0")  # the emergence curve
    page.click("text=mean s")
    means = [float(v) for v in page.eval_on_selector_all("div.card", "cs => cs.map(c => c.dataset.mean)")]
    assert means == sorted(means, reverse=True)
    page.check("#flagged")
    visible = page.eval_on_selector_all("div.card", "cs => cs.filter(c => c.style.display !== 'none').length")
    flagged = page.eval_on_selector_all("div.card.flagged", "cs => cs.length")
    assert visible == flagged
    assert all(u.startswith(("file:", "data:")) for u in requests), requests  # nothing from the network
    page.close()
