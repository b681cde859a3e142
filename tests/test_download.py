"""meru download against a loopback HTTP server (127.0.0.1 only) with injected faults."""

from __future__ import annotations

import io
import json
import threading
import time
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from meru.data import download as dl
from meru.data.manifest import read_manifest


def _png(color, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(color, size=(30, 50)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


class _Server:
    """Serves /ok/<i>.png, /ok/<i>.jpg, /missing (404), /trunc (Content-Length larger than body),
    /text (HTML body), /slow (3 s before the body). Counts requests per path."""

    def __init__(self):
        self.requests: Counter = Counter()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                owner.requests[self.path] += 1
                p = self.path
                if p.startswith("/ok/"):
                    i = int(p.split("/")[-1].split(".")[0])
                    body = _png((i * 40 % 256, 0, 0)) if p.endswith(".png") else _jpeg((0, i * 40 % 256, 0))
                    self._send(200, body, "image/png" if p.endswith(".png") else "image/jpeg")
                elif p == "/missing":
                    self._send(404, b"not found", "text/plain")
                elif p == "/trunc":
                    body = _png((1, 2, 3))
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                elif p == "/text":
                    self._send(200, b"<html>not an image</html>", "text/html")
                elif p == "/slow":
                    time.sleep(3)
                    self._send(200, _png((9, 9, 9)), "image/png")
                else:
                    self._send(500, b"?", "text/plain")

            def _send(self, code, body, ctype):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


def _redcaps_zip(path, base):
    anns = []
    for i in range(6):
        ext = "png" if i % 2 == 0 else "jpg"
        anns.append(
            {
                "image_id": f"id{i}",
                "author": "u",
                "url": f"{base}/ok/{i}.{ext}",
                "raw_caption": f"Raw {i}",
                "caption": f"caption {i}",
                "subreddit": "itookapicture",
                "score": i,
                "created_utc": 1.5e9,
                "permalink": f"/r/x/{i}",
                "crosspost_parents": None,
            }
        )
    # faults and a duplicate of an ok URL (same url, different caption: dropped before download)
    for j, p in enumerate(["/missing", "/trunc", "/text", "/slow"]):
        anns.append(
            {
                "image_id": f"bad{j}",
                "author": "u",
                "url": base + p,
                "raw_caption": "r",
                "caption": f"bad {j}",
                "subreddit": "earthporn",
                "score": 0,
                "created_utc": 1.5e9,
                "permalink": "/",
                "crosspost_parents": None,
            }
        )
    anns.append(dict(anns[0], image_id="dup", caption="duplicate"))
    with zipfile.ZipFile(path, "w") as zf:
        # files are read in sorted name order: earthporn_2020 (faults), then itookapicture_2020 (ok + duplicate)
        zf.writestr("annotations/earthporn_2020.json", json.dumps({"info": {}, "annotations": anns[6:10]}))
        zf.writestr(
            "annotations/itookapicture_2020.json", json.dumps({"info": {}, "annotations": anns[:6] + anns[10:]})
        )


def test_download_redcaps_faults_and_resume(tmp_path):
    import webdataset as wds

    with _Server() as srv:
        ann = tmp_path / "redcaps_v1.0_annotations.zip"
        _redcaps_zip(ann, srv.base)
        out = tmp_path / "redcaps"
        man = dl.download("redcaps", str(ann), out, image_size=16, processes=1, threads=4, timeout=1, shard_size=4)
        c = man["counts"]
        # 11 rows: 6 ok, 4 faults, 1 duplicate URL
        assert c["input_rows"] == 11 and c["duplicate_url"] == 1
        assert c["attempted"] == 10 and c["succeeded"] == 6 and c["failed"] == 4
        assert man["failed_by_reason"] == {
            "http_404": 1,
            "http_error": 0,
            "timeout": 1,
            "truncated": 1,
            "not_an_image": 1,
            "other": 0,
        }
        assert read_manifest(out, verify=True)["num_samples"] == 6
        assert len(man["shards"]) == 3  # 10 URLs / 4 per shard
        # the duplicate was requested once only
        assert srv.requests["/ok/0.png"] == 1

        # shards decode; captions and subreddit survive
        urls = [str(out / s["path"]) for s in man["shards"]]
        got = {}
        for sample in wds.WebDataset(urls, shardshuffle=False).decode("pil"):
            img = sample["jpg"]
            assert img.mode == "RGB" and min(img.size) == 16  # short side resized to image_size
            meta = sample["json"]
            got[meta["image_id"]] = (sample["txt"], meta["subreddit"])
        assert got == {f"id{i}": (f"caption {i}", "itookapicture") for i in range(6)}

        # rerun: every shard has its stats, so no image is fetched again
        before = sum(srv.requests.values())
        man2 = dl.download("redcaps", str(ann), out, image_size=16, processes=1, threads=4, timeout=1, shard_size=4)
        assert sum(srv.requests.values()) == before
        assert man2["counts"] == man["counts"]
        assert [s["sha256"] for s in man2["shards"]] == [s["sha256"] for s in man["shards"]]


def test_download_resumes_missing_shard_only(tmp_path, capsys):
    from meru.cli import main

    with _Server() as srv:
        tsv = tmp_path / "cc12m.tsv"
        tsv.write_text("".join(f"{srv.base}/ok/{i}.png\tcap {i}\n" for i in range(4)))
        out = tmp_path / "cc12m"
        rc = main(
            [
                "download",
                "--source",
                "cc12m",
                "--annotations",
                str(tsv),
                "--out",
                str(out),
                "--image-size",
                "8",
                "--threads",
                "2",
                "--timeout",
                "2",
                "--shard-size",
                "2",
            ]
        )
        assert rc == 0 and "cc12m: 4/4 images downloaded (100.0%), 2 shards" in capsys.readouterr().out
        assert srv.requests["/ok/0.png"] == 1 and srv.requests["/ok/2.png"] == 1
        (out / "00001_stats.json").unlink()  # as if the run had died during shard 1
        man = dl.download("cc12m", str(tsv), out, image_size=8, threads=2, timeout=2, shard_size=2)
        assert srv.requests["/ok/0.png"] == 1 and srv.requests["/ok/2.png"] == 2
        assert man["counts"]["succeeded"] == 4 and man["complete"]


def test_read_cc3m_column_order(tmp_path):
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("a dog\thttp://x/1.jpg\na cat\thttp://x/2.jpg\na dog\thttp://x/1.jpg\n")
    rows, n_in, dups = dl.dedupe(dl.read_annotations("cc3m", str(tsv)))
    assert rows == [{"url": "http://x/1.jpg", "caption": "a dog"}, {"url": "http://x/2.jpg", "caption": "a cat"}]
    assert (n_in, dups) == (3, 1)


def test_changed_url_list_refuses_to_mix(tmp_path):
    with _Server() as srv:
        tsv = tmp_path / "a.tsv"
        tsv.write_text(f"{srv.base}/ok/1.png\tx\n")
        out = tmp_path / "o"
        dl.download("cc12m", str(tsv), out, image_size=8, threads=1, timeout=2)
        tsv.write_text(f"{srv.base}/ok/2.png\ty\n")
        with pytest.raises(RuntimeError, match="differs"):
            dl.download("cc12m", str(tsv), out, image_size=8, threads=1, timeout=2)


def test_classify_error():
    assert dl.classify_error("HTTP Error 404: Not Found") == "http_404"
    assert dl.classify_error("HTTP Error 503: Service Unavailable") == "http_error"
    assert dl.classify_error("The read operation timed out") == "timeout"
    assert dl.classify_error("IncompleteRead(10 bytes read, 20 more expected)") == "truncated"
    assert dl.classify_error("Image decoding error") == "not_an_image"  # img2dataset resizer
    assert dl.classify_error("something else") == "other"
