"""Dataset registry, the download (local HTTP server on 127.0.0.1 only), the cache and the mirrors."""
import dataclasses
import hashlib
import http.server
import os
import socket
import threading

import numpy as np
import pytest

from ttt4rec_edu.data import (DATASETS, ChecksumError, DatasetInfo, DownloadError, UnknownDatasetError,
                              dataset_stats, default_cache_dir, download_file, ensure_dataset_file,
                              find_or_download, get_dataset_info, load_dataset)
from ttt4rec_edu.data import registry


# ------------------------------------------------------------------------------------------ registry
def test_paper_settings():
    expected = {"gowalla": (20, 5, 100), "twitch-100k": (15, 5, 70), "amazon-video-games": (5, 5, 50),
                "amazon-beauty": (5, 5, 50)}
    assert set(expected) <= set(DATASETS)
    for name, (users, items, max_len) in expected.items():
        info = DATASETS[name]
        assert (info.min_user_inter, info.min_item_inter, info.max_len) == (users, items, max_len)
        assert info.name == name and info.description and info.citation
        for url in info.urls:
            assert url.startswith(("http://", "https://"))
        assert info.sha256 is None or len(info.sha256) == 64
    assert DATASETS["gowalla"].urls == ("https://snap.stanford.edu/data/loc-gowalla_totalCheckins.txt.gz",)
    assert DATASETS["gowalla"].format == "gowalla" and DATASETS["twitch-100k"].file_name == "100k_a.csv"
    assert DATASETS["amazon-video-games"].file_name == "ratings_Video_Games.csv"
    beauty = DATASETS["amazon-beauty"]
    assert beauty.sha256 == "226cce9c3105299ca0db9615d7d3fb32b3175e90da43100ae352599f0f0107b8"
    assert beauty.format == "sequences" and beauty.file_name == "amazon-beauty-5core.txt"
    with pytest.raises(dataclasses.FrozenInstanceError):
        beauty.max_len = 10


def test_unknown_dataset_name_lists_known_ones():
    assert get_dataset_info("Amazon_Beauty") is DATASETS["amazon-beauty"]
    with pytest.raises(UnknownDatasetError) as info:
        get_dataset_info("movielens")
    for name in DATASETS:
        assert name in str(info.value)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TTT4REC_DATA_DIR", str(tmp_path / "x"))
    assert default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("TTT4REC_DATA_DIR")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert str(default_cache_dir()) == os.path.join(repo, "data", "cache")  # running from the checkout


# ------------------------------------------------------------------------------------------ local server
class Server:
    """A tiny HTTP server in a thread that serves ``files`` (path -> bytes), honouring ``Range`` unless told
    not to, and optionally cutting the first response short (a dropped connection)."""

    def __init__(self):
        self.files = {}
        self.requests = []
        self.honour_range = True
        self.cut_after = None  # bytes to send before closing, once
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and outer.honour_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if outer.cut_after is not None:
                    payload, outer.cut_after = payload[:outer.cut_after], None
                    self.wfile.write(payload)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def payload():
    data = np.random.default_rng(0).integers(0, 256, size=300_000, dtype=np.uint8).tobytes()
    return data, hashlib.sha256(data).hexdigest()


def test_download_whole_file(server, payload, tmp_path):
    data, digest = payload
    server.files["/f.bin"] = data
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=digest, progress=False)
    assert dest.read_bytes() == data
    assert not (tmp_path / "f.bin.part").exists()
    assert server.requests == [("/f.bin", None)]


def test_resume_partial_file(server, payload, tmp_path):
    data, digest = payload
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data[:123_456])
    dest = download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=digest, progress=False)
    assert dest.read_bytes() == data
    assert server.requests == [("/f.bin", "bytes=123456-")]  # only the tail was asked for


def test_resume_after_dropped_connection(server, payload, tmp_path):
    data, digest = payload
    server.files["/f.bin"] = data
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="resume"):
        download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=digest, progress=False)
    part = tmp_path / "f.bin.part"
    assert part.stat().st_size == 100_000 and not (tmp_path / "f.bin").exists()
    download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.requests[-1] == ("/f.bin", "bytes=100000-")


def test_server_ignoring_range_restarts(server, payload, tmp_path):
    data, digest = payload
    server.files["/f.bin"] = data
    server.honour_range = False
    (tmp_path / "f.bin.part").write_bytes(b"garbage that must not stay at the front")
    download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data


def test_complete_partial_file_gets_416_and_is_checked(server, payload, tmp_path):
    data, digest = payload
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)
    download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=digest, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data


def test_checksum_mismatch_keeps_file_aside(server, payload, tmp_path):
    data, _ = payload
    server.files["/f.bin"] = data
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match="sha256 mismatch") as info:
        download_file(server.url + "/f.bin", tmp_path / "f.bin", sha256=wrong, progress=False)
    aside = tmp_path / "f.bin.sha256-mismatch"
    assert str(aside) in str(info.value)
    assert aside.read_bytes() == data  # kept for inspection
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()  # never used


def free_port():
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_http_error_and_unreachable(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url + "/missing", tmp_path / "m", progress=False)
    with pytest.raises(DownloadError, match="cannot reach"):
        download_file(f"http://127.0.0.1:{free_port()}/x", tmp_path / "m", progress=False, timeout=5)


# ------------------------------------------------------------------------------------------ ensure_dataset_file
def register_test_dataset(monkeypatch, url, sha256, file_name="toy.txt"):
    info = DatasetInfo(name="toy", file_name=file_name, format="sequences", urls=(url,) if url else (),
                       sha256=sha256, min_user_inter=2, min_item_inter=1, max_len=7,
                       description="toy", citation="none")
    monkeypatch.setitem(registry.DATASETS, "toy", info)
    return info


TOY = b"1 1 2 3\n2 2 3\n3 1\n"


def test_ensure_downloads_into_cache_then_reuses_it(server, clean_data_env, monkeypatch):
    server.files["/toy.txt"] = TOY
    register_test_dataset(monkeypatch, server.url + "/toy.txt", hashlib.sha256(TOY).hexdigest())
    path = ensure_dataset_file("toy", progress=False)
    assert path == clean_data_env / "toy.txt" and path.read_bytes() == TOY
    assert ensure_dataset_file("toy", download=False) == path
    assert len(server.requests) == 1  # the second call used the cache
    data = load_dataset("toy", progress=False)  # registry filters: users >= 2 drops user 3
    assert data.num_users == 2 and data.meta["max_len"] == 7 and data.meta["min_user_inter"] == 2
    assert data.meta["source"] == str(path)


def test_mirror_is_used_in_place_and_checked(tmp_path, clean_data_env, monkeypatch):
    good, bad = tmp_path / "m1", tmp_path / "m2"
    good.mkdir(), bad.mkdir()
    (good / "toy.txt").write_bytes(TOY)
    (bad / "toy.txt").write_bytes(TOY + b"4 4 4\n")
    register_test_dataset(monkeypatch, None, hashlib.sha256(TOY).hexdigest())
    monkeypatch.setenv("TTT4REC_DATA_MIRRORS", os.pathsep.join([str(bad), str(good)]))
    with pytest.warns(UserWarning, match="not using it"):
        path = ensure_dataset_file("toy", download=False)
    assert path == good / "toy.txt"  # the bad mirror copy was skipped, the good one used where it lies
    assert not clean_data_env.exists() or not any(clean_data_env.iterdir())  # nothing was copied
    assert (bad / "toy.txt").exists()  # mirrors are never renamed or deleted


def test_corrupt_cached_file_is_set_aside(server, clean_data_env, monkeypatch):
    server.files["/toy.txt"] = TOY
    register_test_dataset(monkeypatch, server.url + "/toy.txt", hashlib.sha256(TOY).hexdigest())
    clean_data_env.mkdir(parents=True)
    (clean_data_env / "toy.txt").write_bytes(b"1 1\n")
    with pytest.warns(UserWarning):
        path = ensure_dataset_file("toy", progress=False)
    assert path.read_bytes() == TOY
    assert (clean_data_env / "toy.txt.sha256-mismatch").read_bytes() == b"1 1\n"


def test_no_copy_and_no_download_says_what_to_put_where(clean_data_env, monkeypatch):
    url = f"http://127.0.0.1:{free_port()}/toy.txt"  # nothing listens there, like having no network
    register_test_dataset(monkeypatch, url, None)
    with pytest.raises(DownloadError) as info:
        ensure_dataset_file("toy", download=False)
    message = str(info.value)
    assert "'toy.txt'" in message and str(clean_data_env) in message and url in message
    with pytest.raises(DownloadError, match="download failed.*put the file 'toy.txt'"):
        ensure_dataset_file("toy", progress=False)
    with pytest.raises(DownloadError, match="no direct download link.*100k_a.csv"):
        ensure_dataset_file("twitch-100k")  # Google-Drive-only file: the message says where to get it


def test_download_takes_the_entry_not_a_name(tmp_path, clean_data_env, monkeypatch):
    # The download never looks a name up: an entry that is not in the registry works as it is.
    info = DatasetInfo(name="unregistered", file_name="toy.txt", format="sequences", urls=(), sha256=None,
                       min_user_inter=1, min_item_inter=1, max_len=5, description="toy", citation="none")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "toy.txt").write_bytes(TOY)
    monkeypatch.setenv("TTT4REC_DATA_MIRRORS", str(mirror))
    assert "unregistered" not in DATASETS
    assert find_or_download(info, download=False) == mirror / "toy.txt"
    assert ensure_dataset_file(info, download=False) == mirror / "toy.txt"
    with pytest.raises(TypeError, match="takes a DatasetInfo.*ensure_dataset_file"):
        find_or_download("amazon-beauty", download=False)


def test_registry_checksum_mismatch_is_reported(server, clean_data_env, monkeypatch):
    server.files["/toy.txt"] = TOY
    register_test_dataset(monkeypatch, server.url + "/toy.txt", "f" * 64)
    with pytest.raises(ChecksumError):
        ensure_dataset_file("toy", progress=False)
    assert not (clean_data_env / "toy.txt").exists()
    assert (clean_data_env / "toy.txt.sha256-mismatch").exists()


# ------------------------------------------------------------------------------------------ real data
def test_real_amazon_beauty_from_the_mirror(shared_data_dir, clean_data_env, monkeypatch):
    monkeypatch.setenv("TTT4REC_DATA_MIRRORS", str(shared_data_dir))
    data = load_dataset("amazon-beauty", download=False)
    assert data.meta["source"] == str(shared_data_dir / "amazon-beauty-5core.txt")  # used in place
    stats = dataset_stats(data)
    assert (stats["users"], stats["items"], stats["interactions"]) == (22363, 12101, 198502)
    assert data.num_items == 12101 and round(stats["avg_seq_len"], 2) == 8.88
    assert min(len(s) for s in data.sequences) == 5 and max(len(s) for s in data.sequences) == 204
    assert data.meta["min_user_inter"] == 5 and data.meta["min_item_inter"] == 5 and data.meta["max_len"] == 50
    assert data.meta["raw"] == {"users": 22363, "items": 12101, "interactions": 198502}
