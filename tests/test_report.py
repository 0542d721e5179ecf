"""`patronus report`: one offline HTML page with a card per prototype (a browser test follows in tests/browser)."""

import json
import re
from html.parser import HTMLParser

from patronus_diffusion.cli.main import main
from test_report_results import write_audit


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cards, self.srcs, self.links, self.scripts = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "div" and "card" in (a.get("class") or "").split():
            self.cards.append(a.get("id"))
        if "src" in a:
            self.srcs.append(a["src"])
        if tag in ("link", "a") and a.get("href"):
            self.links.append(a["href"])
        if tag == "script":
            self.scripts.append(a)


def test_report_is_one_offline_page_with_a_card_per_prototype(tiny_run, tmp_path, capsys):
    earlier = tmp_path / "earlier" / "evaluate"
    earlier.mkdir(parents=True)
    (earlier / "class_agreement.json").write_text(json.dumps(
        {"agreement": 0.3526, "n_images": 100, "per_image": 4, "chance": 0.1, "judge_test_accuracy": 0.8735,
         "agreement_standard_error": 0.0412, "judge_on_sources": 0.76}))
    (earlier / "fid.json").write_text(json.dumps({"fid": 81.1, "kid": 0.0327, "protocol_line": "FID 81.10 (N=500)"}))
    write_audit(tmp_path / "earlier" / "audit")  # `patronus audit`'s file, quoted with its verdict (issue 35)
    (tmp_path / "earlier" / "broken").mkdir()
    (tmp_path / "earlier" / "broken" / "debias.json").write_text("{cut short")  # listed, not a traceback
    assert main(["report", "--run", str(tiny_run), "--out", str(tmp_path / "r"), "--quick", "--no-progress",
                 "--device", "cpu", "--results", str(tmp_path / "earlier")]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    p = _Collect()
    p.feed(page)
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    n = data["card"]["prototypes"]
    assert p.cards == [f"p{j}" for j in range(n)]
    assert p.srcs and all(s.startswith("data:image/png;base64,") for s in p.srcs)  # every picture inline
    assert not p.links and all("src" not in s for s in p.scripts)  # no external stylesheet, link or script
    assert not re.search(r"https?://", page)
    assert len(data["prototypes"]) == n and {"rise", "s_quantiles", "nearest", "dead"} <= set(data["prototypes"][0])
    assert "median_rise" in data["card"]["edit_benchmark"] and data["quality"]["probes"]
    em = data["prototypes"][0]["emergence"]  # the "when" curve of every card, with its numbers
    assert set(em) == {"t_half", "final_gain", "requested_change"} and em["requested_change"] >= 0
    assert page.count('class="when"') == n
    printed = capsys.readouterr().out
    assert "prototype cards" in printed and "could not read 1 result file(s)" in printed
    assert "for <i>mark</i>: <b>uses the attribute</b> (tau = 0.05)" in page
    assert "could not read " in page and "broken/debias.json: not JSON" in page
    assert "class agreement 0.353</b> &plusmn; 0.041" in page and "FID 81.10 (N=500)" in page  # from --results
    assert "0.760 on these source images" in page
    # every figure a labelled value: no raw JSON objects in the visible page (the data block at the end aside)
    visible = page.split("<script")[0]
    assert not re.search(r"\{&quot;|\{\"", visible), "raw JSON in the page"
