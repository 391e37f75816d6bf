"""The code verifier fails closed: without a usable bubblewrap it never runs a program, and says why. These tests
need no bwrap — they matter most on exactly the machines that lack it — so they are not behind ``needs_bwrap``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from rlpipe.verify.code import CodeVerifier
from rlpipe.verify.sandbox import SandboxUnavailable
from rlpipe.verify.types import VerdictKind

ASSERT_GOLD = {"tests": ["assert f(2) == 4", "assert f(5) == 10"]}
GOOD_F = "def f(x):\n    return 2 * x\n"


def _fake_bwrap(where: Path, body: str) -> Path:
    fake = where / "bwrap"
    fake.write_text("#!/bin/sh\n" + body)
    fake.chmod(0o755)
    return fake


def test_no_bwrap_on_the_path_is_an_error_never_a_run(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # a machine without bubblewrap
    verdict = CodeVerifier().score(GOOD_F, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.ERROR and not verdict.rewardable, verdict
    assert "bwrap" in verdict.details["error"]


def test_missing_bwrap_is_an_error_never_a_run(tmp_path):
    v = CodeVerifier(bwrap=str(tmp_path / "no-bwrap"))
    verdict = v.score(GOOD_F, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.ERROR and not verdict.rewardable
    assert "bwrap" in verdict.details["error"]
    with pytest.raises(SandboxUnavailable):
        CodeVerifier(bwrap=str(tmp_path / "no-bwrap"), probe=True)


def test_broken_bwrap_is_an_error():
    with tempfile.TemporaryDirectory() as where:  # not under tmp_path: its parents are private to the test user
        os.chmod(where, 0o755)
        fake = _fake_bwrap(Path(where), "if [ \"$1\" = --version ]; then echo 'bubblewrap 0.8.0'; exit 0; fi\n"
                                        "echo 'bwrap: Creating new namespace failed: Operation not permitted' >&2\n"
                                        "exit 1\n")
        verdict = CodeVerifier(bwrap=str(fake)).score(GOOD_F, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.ERROR and not verdict.rewardable, verdict
    assert "Operation not permitted" in verdict.details["stderr"]


def test_old_bwrap_is_refused(tmp_path):
    fake = _fake_bwrap(tmp_path, "echo 'bubblewrap 0.6.1'\n")
    verdict = CodeVerifier(bwrap=str(fake)).score(GOOD_F, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.ERROR and "0.8.0" in verdict.details["error"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root must refuse to run the sandbox as root")
def test_root_without_an_unprivileged_uid_is_refused(tmp_path):
    # A bwrap that would report success: the refusal must come before anything runs.
    fake = _fake_bwrap(tmp_path, "if [ \"$1\" = --version ]; then echo 'bubblewrap 0.8.0'; exit 0; fi\nexit 0\n")
    verdict = CodeVerifier(run_as_uid=0, bwrap=str(fake)).score(GOOD_F, ASSERT_GOLD)
    assert verdict.kind is VerdictKind.ERROR and "RLIMIT_NPROC" in verdict.details["error"]
