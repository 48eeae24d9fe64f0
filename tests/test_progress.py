"""undiffuse.progress: bars only on a terminal and never with --quiet; notes unless quiet; the sampling bar counts
samples. (The commands on a real pseudo-terminal: tests/test_cli.py.)"""

from __future__ import annotations

import pytest

import undiffuse.progress as P


@pytest.fixture(autouse=True)
def _not_quiet():
    P.set_quiet(False)
    yield
    P.set_quiet(False)


def test_no_bar_when_stderr_is_not_a_terminal(capsys):
    with P.progress(total=3, desc="work") as bar:
        bar.update(3)
    assert bar.disable and capsys.readouterr().err == ""


def test_quiet_silences_bars_and_notes(capsys, monkeypatch):
    monkeypatch.setattr(P.sys.stderr, "isatty", lambda: True, raising=False)
    assert P.enabled()
    P.set_quiet(True)
    assert not P.enabled() and P.progress(total=1).disable
    P.note("training a classifier")
    assert capsys.readouterr().err == ""


def test_notes_show_without_a_terminal(capsys):
    P.note("training a classifier (once; cached as X)")
    assert capsys.readouterr().err == "training a classifier (once; cached as X)\n"


def test_sampling_bar_counts_samples_per_sampler_step(monkeypatch, capsys):
    """Two batches (5 + 3 samples) of 4 sampler steps each: the bar ends at 8/8 samples, rate in samples/s,
    and a chained callback sees every step."""
    monkeypatch.setattr(P, "enabled", lambda: True)
    seen = []
    with P.sampling_progress(8, 4, then=seen.append) as cb:
        for b in (5, 3):
            for i in range(4):
                cb({"i": i, "x": [0.0] * b})
                if i == 0:
                    shown = str(cb.bar)
        final = str(cb.bar)
    assert len(seen) == 8 and "8/8" in final and "sample/s" in final and "/8" in shown
    capsys.readouterr()


def test_advance_to_moves_a_bar_to_the_batches_done(monkeypatch, capsys):
    monkeypatch.setattr(P, "enabled", lambda: True)
    with P.progress(total=10, unit="example") as bar:
        hook = P.advance_to(bar)
        hook(4, 10)
        hook(10, 10)
        assert bar.n == 10
    capsys.readouterr()
