"""Credentials in URLs never survive redaction; URLs without them pass unchanged."""

from __future__ import annotations

import pytest

from btsys.redact import MASK, redact, redact_text, redact_url


@pytest.mark.parametrize(
    "url, expected",
    [
        ("https://user:s3cret@host/data/", f"https://{MASK}@host/data/"),
        ("https://token@host:8443/x", f"https://{MASK}@host:8443/x"),
        (
            "http://127.0.0.1:8000/a?token=s3cret&symbol=BTC",
            f"http://127.0.0.1:8000/a?token={MASK}&symbol=BTC",
        ),
        ("https://b.s3.amazonaws.com/k?X-Amz-Signature=s3cret&X-Amz-Credential=AK", None),
        ("https://data.binance.vision", "https://data.binance.vision"),
        ("file:///tmp/mirror", "file:///tmp/mirror"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url, expected):
    out = redact_url(url)
    assert "s3cret" not in out and "AK" not in out.split("?", 1)[-1].replace(MASK, "")
    if expected is not None:
        assert out == expected


def test_redact_text_and_nested_structures():
    msg = "GET https://u:s3cret@h/x.zip failed; retry http://h2/y?sig=s3cret"
    assert "s3cret" not in redact_text(msg)
    assert redact_text(msg).startswith(f"GET https://{MASK}@h/x.zip failed")
    doc = {"source": {"base_url": "https://u:s3cret@h/"}, "urls": ["https://u:s3cret@h/a"], "n": 3}
    out = redact(doc)
    assert "s3cret" not in repr(out) and out["n"] == 3 and out["source"]["base_url"] == f"https://{MASK}@h/"


def test_redact_text_sees_urls_as_hydra_escapes_them():
    # Hydra writes overrides with ':' and '=' escaped (.hydra/overrides.yaml, multirun logs)
    line = r"- data.source.base_url=http\://user\:s3cret@127.0.0.1\:9/a?token\=s3cret&symbol\=BTC"
    out = redact_text(line)
    assert "s3cret" not in out
    assert out == rf"- data.source.base_url=http\://{MASK}@127.0.0.1\:9/a?token\={MASK}&symbol\=BTC"
    assert redact_text(r"http\://h\:8/plain?symbol\=BTC") == r"http\://h\:8/plain?symbol\=BTC"


def test_a_multiruns_parent_params_mask_swept_urls():
    """The parent of a Hydra multirun logs each swept key's values (``sweep.grid.<key>``) masked."""
    from omegaconf import OmegaConf

    from btsys.report.callback import grid_params

    url = "http://u:s3cret@127.0.0.1:9/"
    config = OmegaConf.create(
        {"hydra": {"sweeper": {"params": {}}, "overrides": {"task": [f"data.source.base_url={url},{url}x"]}}}
    )
    params = grid_params(OmegaConf.create({"strategy": {"name": "ma_cross", "fast": 5}}), config)
    assert (
        params["sweep.grid.data.source.base_url"] == f"http://{MASK}@127.0.0.1:9/,http://{MASK}@127.0.0.1:9/x"
    )
    assert "s3cret" not in repr(params) and params["strategy.fast"] == "5"


def test_comma_separated_urls_are_each_redacted():
    """A Hydra sweep over URLs lists them with commas: each one is masked."""
    text = "data.source.base_url=https://u:s3cret@a/x?token=s3cret,http://v:s3cret@b:9/"
    assert redact_text(text) == f"data.source.base_url=https://{MASK}@a/x?token={MASK},http://{MASK}@b:9/"
