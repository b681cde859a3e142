"""`meru fetch-checkpoint`: resumable HTTP against a loopback server that drops the connection halfway,
sha256 verified (published or recorded on first download), mismatches deleted, the Hugging Face cache in
offline mode, and one-line errors through the real `meru` command."""

import hashlib
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from meru.data import fetch as F
from meru.runs import unavailable_reason

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """127.0.0.1 only. ``drop_first``: the first GET sends the full Content-Length but only half the bytes,
    then closes. ``honour_range``: answer ``Range: bytes=N-`` with 206 (else 200 and the whole file)."""

    def __init__(self, drop_first=True, honour_range=True):
        self.ranges, self.drop_first, self.honour_range = [], drop_first, honour_range
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng[len("bytes=") : -1]) if rng and outer.honour_range else 0
                body = PAYLOAD[start:]
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if outer.drop_first and len(outer.ranges) == 1:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/meru_vit_s.pth"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


def test_dropped_download_resumes_with_a_range_request_and_verifies(server, tmp_path):
    out = tmp_path / "released" / "meru-vit-s16-released.pth"
    with pytest.raises(F.FetchError, match="connection closed after 524288 of 1048576 bytes.*rerun to resume"):
        F.fetch_checkpoint(server.url, out, sha256=SHA, attempts=1, timeout=5)
    part = out.with_name(out.name + ".part")
    assert part.stat().st_size == len(PAYLOAD) // 2 and not out.exists()
    digest = F.fetch_checkpoint(server.url, out, sha256=SHA, attempts=1, timeout=5, sha256_out=tmp_path / "s.sha256")
    assert server.ranges == [None, f"bytes={len(PAYLOAD) // 2}-"]  # the second attempt asked for the rest
    assert digest == SHA and out.read_bytes() == PAYLOAD and not part.exists()
    assert (tmp_path / "s.sha256").read_text() == f"{SHA}  {out.name}\n"


def test_retries_within_one_call_resume(server, tmp_path):
    out = tmp_path / "m.pth"
    assert F.fetch_checkpoint(server.url, out, sha256=SHA, attempts=2, timeout=5) == SHA
    assert server.ranges == [None, f"bytes={len(PAYLOAD) // 2}-"] and out.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_cleanly(tmp_path):
    s = Server(honour_range=False)
    try:
        out = tmp_path / "m.pth"
        assert F.fetch_checkpoint(s.url, out, sha256=SHA, attempts=2, timeout=5) == SHA
        assert s.ranges[1] is not None and out.read_bytes() == PAYLOAD  # 200 answer: rewritten, not appended
    finally:
        s.close()


def test_mismatch_deletes_the_download_and_names_both_sums(tmp_path):
    s = Server(drop_first=False)
    try:
        out, wrong = tmp_path / "m.pth", "0" * 64
        with pytest.raises(F.FetchError) as e:
            F.fetch_checkpoint(s.url, out, sha256=wrong, timeout=5)
        msg = str(e.value)
        assert s.url in msg and SHA in msg and wrong in msg and "\n" not in msg
        assert not out.exists() and not out.with_name("m.pth.part").exists()
    finally:
        s.close()


def test_unpublished_sum_is_recorded_then_enforced(tmp_path):
    s = Server(drop_first=False)
    try:
        sums, out = tmp_path / "checksums.txt", tmp_path / "m.pth"
        F.record_sha256(sums, "https://example.org/other.pth", "1" * 64)
        assert F.fetch_checkpoint(s.url, out, checksums=sums, timeout=5) == SHA
        assert F.recorded_sha256(sums, s.url) == SHA
        assert F.recorded_sha256(sums, "https://example.org/other.pth") == "1" * 64  # other lines kept
        F.record_sha256(sums, s.url, "2" * 64)  # the upstream file "changed": the recorded sum wins
        out.unlink()
        with pytest.raises(F.FetchError, match=f"recorded in {sums}"):
            F.fetch_checkpoint(s.url, out, checksums=sums, timeout=5)
        assert not out.exists()
    finally:
        s.close()


def test_file_url_and_hub_urls(tmp_path):
    src = tmp_path / "w.pth"
    src.write_bytes(PAYLOAD)
    assert F.fetch_checkpoint(src.as_uri(), tmp_path / "o" / "w.pth", sha256=SHA) == SHA
    assert F.hub_location("https://huggingface.co/avik-pal/hycoclip/resolve/main/meru_vit_s.pth") == (
        "avik-pal/hycoclip",
        "meru_vit_s.pth",
        "main",
    )
    assert F.hub_location("hf://org/repo/sub/w.pth") == ("org/repo", "sub/w.pth", "main")
    assert F.hub_location("https://dl.fbaipublicfiles.com/meru/meru_vit_s.pth") is None


def test_hub_file_from_the_cache_offline(tmp_path, monkeypatch):
    """A hub URL resolves through huggingface_hub's cache (layout models--ORG--REPO/refs, snapshots) with
    HF_HUB_OFFLINE=1; a file not in the cache is one line naming HF_HUB_OFFLINE and the manual path."""
    import huggingface_hub.constants as C

    commit = "a" * 40
    repo = tmp_path / "hub" / "models--org--repo"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "w.pth").write_bytes(PAYLOAD)
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    out = tmp_path / "o" / "w.pth"
    assert F.fetch_checkpoint("https://huggingface.co/org/repo/resolve/main/w.pth", out, sha256=SHA) == SHA
    assert out.read_bytes() == PAYLOAD
    with pytest.raises(F.FetchError, match="HF_HUB_OFFLINE=1.*place the file at .*missing.pth"):
        F.fetch_checkpoint("hf://org/repo/missing.pth", tmp_path / "o" / "missing.pth")


def test_cli_mismatch_is_one_line(tmp_path):
    src = tmp_path / "w.pth"
    src.write_bytes(b"not the published file")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_HUB_OFFLINE")}
    p = subprocess.run(
        [sys.executable, "-m", "meru", "fetch-checkpoint", "--url", src.as_uri(), "--out", str(tmp_path / "o.pth")]
        + ["--sha256", SHA],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith("meru fetch-checkpoint: error: ") and "sha256 mismatch" in p.stderr
    assert not (tmp_path / "o.pth").exists() and not (tmp_path / "o.pth.part").exists()


def test_unavailable_checkpoint_writes_one_line_and_a_later_fetch_clears_it(tmp_path):
    """`--unavailable-out` (the workflow's `pretrained.unavailable: skip`): a file that cannot be fetched gives
    exit 3, one stderr line and the marker (URL: why); no partial checkpoint; a later good fetch removes it."""
    marker, out = tmp_path / "r" / "x.unavailable", tmp_path / "r" / "x.pth"
    argv = [sys.executable, "-m", "meru", "fetch-checkpoint", "--out", str(out), "--unavailable-out", str(marker)]
    missing = (tmp_path / "nope.pth").as_uri()
    p = subprocess.run(argv + ["--url", missing], capture_output=True, text=True, timeout=120)
    assert p.returncode == 3 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert marker.read_text().splitlines() == [f"{missing}: {tmp_path / 'nope.pth'} not found"]
    assert unavailable_reason(marker) == f"{missing}: {tmp_path / 'nope.pth'} not found"  # what the leaderboard reads
    assert not out.exists() and not out.with_name("x.pth.part").exists()
    (tmp_path / "nope.pth").write_bytes(PAYLOAD)
    p = subprocess.run(argv + ["--url", missing, "--sha256", SHA], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and out.read_bytes() == PAYLOAD and not marker.exists(), p.stderr


def test_an_html_page_is_not_a_checkpoint(tmp_path):
    """A folder or landing page (e.g. a Google Drive folder link) is refused at once, not saved as the file."""

    class Page(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = b"<html><body>a folder</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/drive/folders/x"
        with pytest.raises(F.FetchError, match="sent an HTML page, not a file"):
            F.fetch_checkpoint(url, tmp_path / "o.pth", attempts=3)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert not (tmp_path / "o.pth").exists()


@pytest.mark.parametrize(
    "url, says",
    [
        (
            "hf://nahidalam/CLIP_Embedding_Geometries",
            "names a hub repository, not a file; give the file: hf://ORG/REPO/PATH",
        ),
        (
            "https://drive.google.com/drive/folders/1n54yl6IPZRexw2wE0dqUbQWI7IrpsMvB",
            "a Google Drive folder link, not a file",
        ),
    ],
)
def test_links_that_name_no_file_are_unavailable_without_a_request(tmp_path, url, says):
    """The URLs configs/pretrained.yaml has for the EuCLIP paper's and ATMG's checkpoints (their file names are not
    published as links): one line in the marker saying what url: must name, before any network access."""
    marker, out = tmp_path / "x.unavailable", tmp_path / "x.pth"
    argv = [sys.executable, "-m", "meru", "fetch-checkpoint", "--url", url, "--out", str(out)]
    p = subprocess.run(argv + ["--unavailable-out", str(marker)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 3 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert unavailable_reason(marker).startswith(f"{url}: {says}") and not out.exists()
