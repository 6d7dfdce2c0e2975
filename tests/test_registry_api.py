"""The registry's HTTP API, endpoint by endpoint, against a server on 127.0.0.1 (httpx client).

The conformance suite (test_registry_conformance.py) checks the spec's cases;
these tests check what it does not: ranges, sha512, streamed PATCH, paging
links, the error code of every kind of bad input, limits and modes.
"""

from __future__ import annotations

import hashlib
import json

import anyio
import httpx
import pytest
from _registry_app import (
    digest,
    error_code,
    manifest,
    push_blob,
    push_image,
    registry_client,
    running,
)

from asyncstore import ConnectionError as StoreConnectionError
from asyncstore import MemoryBackend, PermissionDeniedError, RetryPolicy, Store
from asyncstore.oci import OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, RegistryStorage
from asyncstore.registry import RegistryApp, RegistryConfig

pytestmark = pytest.mark.anyio

REPO = "library/app"


async def test_the_base_endpoint_answers_200_with_the_api_version() -> None:
    async with registry_client() as (client, _):
        response = await client.get("/v2/")
        assert response.status_code == 200
        assert response.headers["docker-distribution-api-version"] == "registry/2.0"
        assert response.json() == {}


async def test_a_monolithic_blob_push_is_readable_whole_and_by_head() -> None:
    data = b"some layer bytes" * 1000
    async with registry_client() as (client, _):
        d = await push_blob(client, REPO, data)
        response = await client.get(f"/v2/{REPO}/blobs/{d}")
        assert response.status_code == 200
        assert response.content == data
        assert response.headers["docker-content-digest"] == d
        head = await client.head(f"/v2/{REPO}/blobs/{d}")
        assert head.status_code == 200
        assert head.headers["content-length"] == str(len(data))
        assert head.headers["docker-content-digest"] == d
        assert head.content == b""


async def test_a_blob_range_gets_206_with_exactly_those_bytes() -> None:
    data = bytes(range(256)) * 100
    async with registry_client() as (client, _):
        d = await push_blob(client, REPO, data)
        for header, (start, end) in {
            "bytes=10-19": (10, 20),
            "bytes=25500-": (25500, 25600),
            "bytes=-7": (25593, 25600),
            "bytes=25590-99999": (25590, 25600),
        }.items():
            response = await client.get(f"/v2/{REPO}/blobs/{d}", headers={"range": header})
            assert response.status_code == 206, header
            assert response.content == data[start:end], header
            assert response.headers["content-range"] == f"bytes {start}-{end - 1}/{len(data)}"


async def test_a_range_past_the_end_gets_416_with_the_size() -> None:
    async with registry_client() as (client, _):
        d = await push_blob(client, REPO, b"0123456789")
        response = await client.get(f"/v2/{REPO}/blobs/{d}", headers={"range": "bytes=10-20"})
        assert response.status_code == 416
        assert response.headers["content-range"] == "bytes */10"


async def test_a_blob_of_another_repository_is_unknown_here() -> None:
    async with registry_client() as (client, _):
        d = await push_blob(client, "team/a", b"private")
        response = await client.get(f"/v2/team/b/blobs/{d}")
        assert response.status_code == 404
        assert error_code(response) == "BLOB_UNKNOWN"


async def test_a_chunked_upload_with_content_range_rejects_out_of_order_chunks() -> None:
    data = b"0123456789" * 10_000
    async with registry_client() as (client, _):
        start = await client.post(f"/v2/{REPO}/blobs/uploads/")
        assert start.status_code == 202
        location = start.headers["location"]
        assert start.headers["range"] == "0-0"
        assert location.startswith(f"/v2/{REPO}/blobs/uploads/")
        # a chunk that does not start at 0 is out of order
        wrong = await client.patch(
            location, content=data[10:20], headers={"content-range": "10-19"}
        )
        assert wrong.status_code == 416
        assert error_code(wrong) == "BLOB_UPLOAD_INVALID"
        first = await client.patch(
            location, content=data[:60_000], headers={"content-range": "0-59999"}
        )
        assert first.status_code == 202
        assert first.headers["range"] == "0-59999"
        # the same chunk again is stale
        again = await client.patch(
            location, content=data[:60_000], headers={"content-range": "0-59999"}
        )
        assert again.status_code == 416
        status = await client.get(location)
        assert status.status_code == 204
        assert status.headers["range"] == "0-59999"
        second = await client.patch(
            first.headers["location"],
            content=data[60_000:],
            headers={"content-range": f"60000-{len(data) - 1}"},
        )
        assert second.status_code == 202
        done = await client.put(second.headers["location"], params={"digest": digest(data)})
        assert done.status_code == 201
        assert done.headers["location"] == f"/v2/{REPO}/blobs/{digest(data)}"
        assert (await client.get(done.headers["location"])).content == data


async def test_streamed_patches_without_content_range_append_in_order() -> None:
    pieces = [b"a" * 70_000, b"b" * 1, b"c" * 300_000]
    data = b"".join(pieces)

    async def body(piece: bytes):  # a chunked request body, as docker sends it
        for i in range(0, len(piece), 8192):
            yield piece[i : i + 8192]

    async with registry_client() as (client, _):
        location = (await client.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
        for piece in pieces:
            response = await client.patch(location, content=body(piece))
            assert response.status_code == 202, response.text
            location = response.headers["location"]
        assert response.headers["range"] == f"0-{len(data) - 1}"
        done = await client.put(location, params={"digest": digest(data)})
        assert done.status_code == 201
        assert (await client.get(f"/v2/{REPO}/blobs/{digest(data)}")).content == data


async def test_a_post_then_put_with_the_whole_body_stores_the_blob() -> None:
    data = b"put in one go"
    async with registry_client() as (client, _):
        location = (await client.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
        done = await client.put(location, params={"digest": digest(data)}, content=data)
        assert done.status_code == 201
        assert done.headers["docker-content-digest"] == digest(data)


async def test_a_wrong_digest_at_the_end_of_an_upload_is_digest_invalid_and_stores_nothing() -> (
    None
):
    async with registry_client() as (client, registry):
        location = (await client.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
        wrong = digest(b"something else")
        response = await client.put(location, params={"digest": wrong}, content=b"these bytes")
        assert response.status_code == 400
        assert error_code(response) == "DIGEST_INVALID"
        assert not await registry.cas.exists(wrong)
        assert not await registry.cas.exists(digest(b"these bytes"))
        mono = await client.post(
            f"/v2/{REPO}/blobs/uploads/", params={"digest": wrong}, content=b"these bytes"
        )
        assert mono.status_code == 400
        assert error_code(mono) == "DIGEST_INVALID"


async def test_a_cancelled_upload_is_gone() -> None:
    async with registry_client() as (client, _):
        location = (await client.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
        await client.patch(location, content=b"x" * 100)
        assert (await client.delete(location)).status_code == 204
        gone = await client.get(location)
        assert gone.status_code == 404
        assert error_code(gone) == "BLOB_UPLOAD_UNKNOWN"
        assert (await client.delete(location)).status_code == 404


async def test_an_upload_session_of_another_repository_is_unknown() -> None:
    async with registry_client() as (client, _):
        location = (await client.post("/v2/team/a/blobs/uploads/")).headers["location"]
        session = location.rsplit("/", 1)[1]
        other = await client.get(f"/v2/team/b/blobs/uploads/{session}")
        assert other.status_code == 404
        assert error_code(other) == "BLOB_UPLOAD_UNKNOWN"
        bogus = await client.get(f"/v2/{REPO}/blobs/uploads/..%2F..%2Fetc")
        assert bogus.status_code == 404


async def test_a_mount_from_a_repository_that_has_the_blob_is_201_else_an_upload_starts() -> None:
    async with registry_client() as (client, registry):
        d = await push_blob(client, "team/a", b"shared layer")
        mounted = await client.post(
            "/v2/team/b/blobs/uploads/", params={"mount": d, "from": "team/a"}
        )
        assert mounted.status_code == 201
        assert mounted.headers["location"] == f"/v2/team/b/blobs/{d}"
        assert await registry.blob_exists("team/b", d)
        missing = await client.post(
            "/v2/team/c/blobs/uploads/", params={"mount": digest(b"nope"), "from": "team/a"}
        )
        assert missing.status_code == 202
        assert missing.headers["location"].startswith("/v2/team/c/blobs/uploads/")
        # without from: the automatic mount finds the stored blob
        auto = await client.post("/v2/team/d/blobs/uploads/", params={"mount": d})
        assert auto.status_code == 201
        bad = await client.post("/v2/team/e/blobs/uploads/", params={"mount": "sha256:zz"})
        assert error_code(bad) == "DIGEST_INVALID"


async def test_without_automatic_mount_a_mount_without_from_starts_an_upload() -> None:
    async with registry_client(RegistryConfig(automatic_mount=False)) as (client, _):
        d = await push_blob(client, "team/a", b"shared layer")
        response = await client.post("/v2/team/b/blobs/uploads/", params={"mount": d})
        assert response.status_code == 202


async def test_a_manifest_is_served_byte_exact_by_tag_and_by_digest() -> None:
    async with registry_client() as (client, _):
        body, d = await push_image(client, REPO, "v1")
        for reference in ("v1", d):
            response = await client.get(f"/v2/{REPO}/manifests/{reference}")
            assert response.status_code == 200
            assert response.content == body
            assert response.headers["content-type"] == OCI_MANIFEST
            assert response.headers["docker-content-digest"] == d
            head = await client.head(f"/v2/{REPO}/manifests/{reference}")
            assert head.status_code == 200
            assert head.headers["content-length"] == str(len(body))
            assert head.headers["docker-content-digest"] == d


async def test_a_manifest_pushed_by_a_sha512_digest_is_stored_under_it() -> None:
    async with registry_client() as (client, _):
        config, layer = b"{}", b"layer"
        await push_blob(client, REPO, config)
        await push_blob(client, REPO, layer)
        body = manifest(config, [layer])
        d512 = "sha512:" + hashlib.sha512(body).hexdigest()
        response = await client.put(
            f"/v2/{REPO}/manifests/{d512}", content=body, headers={"content-type": OCI_MANIFEST}
        )
        assert response.status_code == 201, response.text
        assert response.headers["docker-content-digest"] == d512
        assert (await client.get(f"/v2/{REPO}/manifests/{d512}")).content == body
        wrong = await client.put(
            f"/v2/{REPO}/manifests/{d512}",
            content=body + b" ",
            headers={"content-type": OCI_MANIFEST},
        )
        assert wrong.status_code == 400
        assert error_code(wrong) == "DIGEST_INVALID"


async def test_deleting_a_tag_keeps_the_manifest_and_deleting_the_digest_removes_it() -> None:
    async with registry_client() as (client, _):
        _, d = await push_image(client, REPO, "v1")
        assert (await client.delete(f"/v2/{REPO}/manifests/v1")).status_code == 202
        tag = await client.get(f"/v2/{REPO}/manifests/v1")
        assert tag.status_code == 404
        assert error_code(tag) == "MANIFEST_UNKNOWN"
        assert (await client.get(f"/v2/{REPO}/manifests/{d}")).status_code == 200
        assert (await client.delete(f"/v2/{REPO}/manifests/{d}")).status_code == 202
        gone = await client.get(f"/v2/{REPO}/manifests/{d}")
        assert gone.status_code == 404
        assert error_code(gone) == "MANIFEST_UNKNOWN"
        assert (await client.delete(f"/v2/{REPO}/manifests/{d}")).status_code == 404


async def test_deleting_a_blob_unlinks_it_from_the_repository() -> None:
    async with registry_client() as (client, _):
        d = await push_blob(client, REPO, b"to delete")
        assert (await client.delete(f"/v2/{REPO}/blobs/{d}")).status_code == 202
        assert (await client.head(f"/v2/{REPO}/blobs/{d}")).status_code == 404
        again = await client.delete(f"/v2/{REPO}/blobs/{d}")
        assert again.status_code == 404
        assert error_code(again) == "BLOB_UNKNOWN"


async def test_the_tag_list_pages_with_n_last_and_a_link_header() -> None:
    async with registry_client() as (client, _):
        _, d = await push_image(client, REPO, "a")
        for tag in ("b", "c", "d", "e"):
            response = await client.put(
                f"/v2/{REPO}/manifests/{tag}",
                content=(await client.get(f"/v2/{REPO}/manifests/{d}")).content,
                headers={"content-type": OCI_MANIFEST},
            )
            assert response.status_code == 201
        everything = await client.get(f"/v2/{REPO}/tags/list")
        assert everything.json() == {"name": REPO, "tags": ["a", "b", "c", "d", "e"]}
        assert "link" not in everything.headers
        seen: list[str] = []
        url = f"/v2/{REPO}/tags/list?n=2"
        while True:
            page = await client.get(url)
            assert page.status_code == 200
            seen += page.json()["tags"]
            if "link" not in page.headers:
                break
            link = page.headers["link"]
            assert link.endswith('>; rel="next"')
            url = link[1 : link.index(">")]
        assert seen == ["a", "b", "c", "d", "e"]
        after = await client.get(f"/v2/{REPO}/tags/list", params={"n": "10", "last": "c"})
        assert after.json()["tags"] == ["d", "e"]
        bad = await client.get(f"/v2/{REPO}/tags/list", params={"n": "-1"})
        assert bad.status_code == 400
        unknown = await client.get("/v2/nothing/here/tags/list")
        assert unknown.status_code == 404
        assert error_code(unknown) == "NAME_UNKNOWN"


async def test_referrers_are_listed_and_filtered_by_artifact_type() -> None:
    async with registry_client() as (client, _):
        _, subject = await push_image(client, REPO, "v1")
        empty = b"{}"
        await push_blob(client, REPO, empty)
        sbom, sig = b"sbom", b"signature"
        await push_blob(client, REPO, sbom)
        await push_blob(client, REPO, sig)
        size = len((await client.get(f"/v2/{REPO}/manifests/v1")).content)
        referrers = {}
        for artifact_type, layer in (("application/spdx+json", sbom), ("x/sig", sig)):
            body = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "artifactType": artifact_type,
                    "config": {"mediaType": OCI_EMPTY, "digest": digest(empty), "size": 2},
                    "layers": [{"mediaType": "x/y", "digest": digest(layer), "size": len(layer)}],
                    "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": size},
                }
            ).encode()
            response = await client.put(
                f"/v2/{REPO}/manifests/{digest(body)}",
                content=body,
                headers={"content-type": OCI_MANIFEST},
            )
            assert response.status_code == 201
            assert response.headers["oci-subject"] == subject
            referrers[artifact_type] = digest(body)
        listing = await client.get(f"/v2/{REPO}/referrers/{subject}")
        assert listing.status_code == 200
        assert listing.headers["content-type"] == OCI_INDEX
        index = listing.json()
        assert index["mediaType"] == OCI_INDEX
        assert {m["digest"] for m in index["manifests"]} == set(referrers.values())
        filtered = await client.get(
            f"/v2/{REPO}/referrers/{subject}", params={"artifactType": "x/sig"}
        )
        assert filtered.headers["oci-filters-applied"] == "artifactType"
        assert [m["digest"] for m in filtered.json()["manifests"]] == [referrers["x/sig"]]
        assert filtered.json()["manifests"][0]["artifactType"] == "x/sig"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v2/Library/App/tags/list", "NAME_INVALID"),
        ("/v2/a/_layers/tags/list", "NAME_INVALID"),
        ("/v2/a/%2E%2E/b/tags/list", "NAME_INVALID"),
        ("/v2/a%2F..%2Fb/tags/list", "NAME_INVALID"),
        ("/v2/a//b/tags/list", "NAME_INVALID"),
        ("/v2/app/blobs/sha256:short", "DIGEST_INVALID"),
        ("/v2/app/blobs/md5:" + "0" * 32, "DIGEST_INVALID"),
        ("/v2/app/manifests/sha256:totallywrong", "DIGEST_INVALID"),
        ("/v2/app/referrers/latest", "DIGEST_INVALID"),
        ("/v2/app/manifests/.INVALID", "MANIFEST_UNKNOWN"),
        ("/v2/app/manifests/missing", "MANIFEST_UNKNOWN"),
        ("/v3/", "NAME_UNKNOWN"),
    ],
)
async def test_bad_names_digests_and_references_get_the_spec_error_code(
    path: str, code: str
) -> None:
    async with registry_client() as (client, _):
        response = await client.get(path)
        assert 400 <= response.status_code < 500
        assert error_code(response) == code


async def test_bad_manifests_get_manifest_invalid_or_manifest_blob_unknown() -> None:
    async with registry_client() as (client, _):
        url = f"/v2/{REPO}/manifests/v1"
        headers = {"content-type": OCI_MANIFEST}
        for body in (b"not json", b"[]", b'{"schemaVersion": 2, "mediaType": "other/type"}'):
            response = await client.put(url, content=body, headers=headers)
            assert response.status_code == 400, body
            assert error_code(response) == "MANIFEST_INVALID", body
        missing = await client.put(url, content=manifest(b"{}", [b"layer"]), headers=headers)
        assert missing.status_code == 400
        assert error_code(missing) == "MANIFEST_BLOB_UNKNOWN"
        bad_tag = await client.put(
            f"/v2/{REPO}/manifests/-bad", content=manifest(b"{}", []), headers=headers
        )
        assert error_code(bad_tag) == "MANIFEST_INVALID"
        untyped = await client.put(url, content=b"{}")
        assert error_code(untyped) == "MANIFEST_INVALID"


async def test_a_manifest_without_content_type_takes_its_media_type_from_the_body() -> None:
    async with registry_client() as (client, _):
        config = b"{}"
        await push_blob(client, REPO, config)
        body = manifest(config, [])
        response = await client.put(f"/v2/{REPO}/manifests/v1", content=body)
        assert response.status_code == 201, response.text
        got = await client.get(f"/v2/{REPO}/manifests/v1")
        assert got.headers["content-type"] == OCI_MANIFEST


@pytest.mark.parametrize(
    "content_range",
    ["-5-10", "10-5", "abc", "0-99999999999999999999", "bytes=5", "0-9/"],
)
async def test_a_malformed_or_impossible_content_range_gets_416_and_leaves_the_session(
    content_range: str,
) -> None:
    async with registry_client() as (client, _):
        location = (await client.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
        response = await client.patch(
            location, content=b"x" * 10, headers={"content-range": content_range}
        )
        assert response.status_code == 416, content_range
        assert error_code(response) == "BLOB_UPLOAD_INVALID"
        status = await client.get(location)
        assert status.headers["range"] == "0-0"


async def test_a_content_length_that_disagrees_with_content_range_gets_size_invalid() -> None:
    async with registry_client() as (client, _):
        location = (await client.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
        response = await client.patch(
            location, content=b"x" * 10, headers={"content-range": "0-19"}
        )
        assert response.status_code == 400
        assert error_code(response) == "SIZE_INVALID"


async def test_a_manifest_over_the_limit_gets_413() -> None:
    config = RegistryConfig(max_manifest_size=1000)
    async with registry_client(config) as (client, _):
        response = await client.put(
            f"/v2/{REPO}/manifests/v1",
            content=b"{" + b" " * 2000 + b"}",
            headers={"content-type": OCI_MANIFEST},
        )
        assert response.status_code == 413
        assert error_code(response) == "SIZE_INVALID"

        async def chunked():  # no Content-Length: the limit holds while the body streams
            for _ in range(10):
                yield b" " * 500

        streamed = await client.put(
            f"/v2/{REPO}/manifests/v1", content=chunked(), headers={"content-type": OCI_MANIFEST}
        )
        assert streamed.status_code == 413


async def test_a_blob_over_the_upload_limit_gets_413_and_is_not_stored() -> None:
    config = RegistryConfig(max_upload_size=1000)
    async with registry_client(config) as (client, registry):
        big = b"x" * 1001
        mono = await client.post(
            f"/v2/{REPO}/blobs/uploads/", params={"digest": digest(big)}, content=big
        )
        assert mono.status_code == 413
        assert error_code(mono) == "SIZE_INVALID"
        assert not await registry.cas.exists(digest(big))
        location = (await client.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
        first = await client.patch(location, content=b"x" * 600)
        assert first.status_code == 202
        over = await client.patch(
            first.headers["location"], content=b"x" * 600, headers={"content-range": "600-1199"}
        )
        assert over.status_code == 413

        async def chunked():
            for _ in range(6):
                yield b"x" * 100

        streamed = await client.patch(first.headers["location"], content=chunked())
        assert streamed.status_code == 413
        at_limit = await client.patch(first.headers["location"], content=b"x" * 400)
        assert at_limit.status_code == 202
        assert at_limit.headers["range"] == "0-999"


async def test_a_read_only_registry_refuses_every_write_with_405() -> None:
    async with registry_client(RegistryConfig(read_only=True)) as (client, _):
        for method, path in [
            ("POST", f"/v2/{REPO}/blobs/uploads/"),
            ("PATCH", f"/v2/{REPO}/blobs/uploads/{'0' * 32}"),
            ("PUT", f"/v2/{REPO}/blobs/uploads/{'0' * 32}?digest={digest(b'')}"),
            ("DELETE", f"/v2/{REPO}/blobs/uploads/{'0' * 32}"),
            ("PUT", f"/v2/{REPO}/manifests/v1"),
            ("DELETE", f"/v2/{REPO}/manifests/v1"),
            ("DELETE", f"/v2/{REPO}/blobs/{digest(b'')}"),
        ]:
            response = await client.request(method, path, content=b"{}")
            assert response.status_code == 405, (method, path)
            assert error_code(response) == "UNSUPPORTED"
        assert (await client.get("/v2/")).status_code == 200


async def test_with_delete_off_deletes_get_405_and_pushes_work() -> None:
    async with registry_client(RegistryConfig(delete=False)) as (client, _):
        _, d = await push_image(client, REPO, "v1")
        for path in (f"/v2/{REPO}/manifests/{d}", f"/v2/{REPO}/manifests/v1"):
            response = await client.delete(path)
            assert response.status_code == 405
            assert error_code(response) == "UNSUPPORTED"
        assert (await client.get(f"/v2/{REPO}/manifests/v1")).status_code == 200


async def test_an_unsupported_method_gets_405_with_allow() -> None:
    async with registry_client() as (client, _):
        response = await client.post(f"/v2/{REPO}/tags/list")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET"
        assert error_code(response) == "UNSUPPORTED"


@pytest.mark.parametrize("error", [OSError("disk on fire"), PermissionDeniedError("disk on fire")])
async def test_a_storage_failure_is_a_json_500_not_a_traceback(error: Exception) -> None:
    class Broken(MemoryBackend):
        async def head(self, key: str):  # type: ignore[no-untyped-def]
            raise error

    async with Store(Broken()) as store:
        app = RegistryApp(RegistryStorage(store))
        async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.head(f"/v2/{REPO}/blobs/{digest(b'x')}")
            assert response.status_code == 500
            got = await client.get(f"/v2/{REPO}/blobs/{digest(b'x')}")
            assert got.status_code == 500
            assert error_code(got) == "UNKNOWN"
            assert "disk on fire" not in got.text


async def test_concurrent_pushes_of_the_same_layers_store_each_blob_once() -> None:
    layers = [bytes([i]) * 300_000 for i in range(4)]
    async with registry_client() as (client, registry):

        async def push(n: int) -> None:
            for layer in layers:
                location = (await client.post(f"/v2/team/r{n}/blobs/uploads/")).headers["location"]
                patched = await client.patch(location, content=layer)
                assert patched.status_code == 202
                done = await client.put(
                    patched.headers["location"], params={"digest": digest(layer)}
                )
                assert done.status_code == 201, done.text

        async with anyio.create_task_group() as tg:
            for n in range(16):
                tg.start_soon(push, n)
        blobs = [key async for key in registry.cas.list_digests()]
        assert sorted(map(str, blobs)) == sorted(digest(layer) for layer in layers)
        for n in range(16):
            for layer in layers:
                assert await registry.blob_exists(f"team/r{n}", digest(layer))


async def test_a_storage_that_does_not_answer_gets_503_with_retry_after() -> None:
    class Unreachable(MemoryBackend):
        async def head(self, key: str):  # type: ignore[no-untyped-def]
            raise StoreConnectionError("connection refused", key=key)

    async with Store(Unreachable(), retry=RetryPolicy(attempts=1)) as store:
        app = RegistryApp(RegistryStorage(store))
        async with running(app) as url, httpx.AsyncClient(base_url=url) as client:
            response = await client.get(f"/v2/{REPO}/blobs/{digest(b'x')}")
            assert response.status_code == 503
            assert response.headers["retry-after"] == "1"
            assert error_code(response) == "TOOMANYREQUESTS"


async def test_an_empty_blob_is_pushed_and_served() -> None:
    async with registry_client() as (client, _):
        d = await push_blob(client, REPO, b"")
        assert d == digest(b"")
        response = await client.get(f"/v2/{REPO}/blobs/{d}")
        assert response.status_code == 200
        assert response.content == b""
        assert response.headers["content-length"] == "0"
        location = (await client.post(f"/v2/{REPO}/blobs/uploads/")).headers["location"]
        done = await client.put(location, params={"digest": d})
        assert done.status_code == 201
