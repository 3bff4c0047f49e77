"""`tinylm serve`: a real server on a loopback port answers good requests with the model's own predictions and every
kind of bad request with a JSON 4xx (never a 500), batches concurrent requests, and serves committees too.

Only the serving mechanics matter here, so the models have random weights (a tiny BERT and a committee of three,
with the shipped 4k vocabulary and AG News labels); texts are real AG News texts from the shipped demo sample.
Answers are compared with the same Predictor called directly, at atol 1e-5 (a batched pass pads differently).
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tinylm.checkpoint import save_model
from tinylm.committee import Committee, save_committee
from tinylm.config import ModelConfig
from tinylm.data import load_task
from tinylm.experiments.demo import DEMO_DATA
from tinylm.inference.predictor import Predictor
from tinylm.model import BertForClassification
from tinylm.serving.app import create_app
from tinylm.serving.batcher import MicroBatcher, Overloaded, Stopped
from tinylm.serving.server import running
from tinylm.serving.settings import ServeSettings
from tinylm.tokenizer import load_tokenizer

LABELS = ["World", "Sports", "Business", "Sci/Tech"]
LIMITS = ServeSettings(max_texts=8, max_chars=400, max_body_bytes=8192, max_batch=16, max_wait_ms=5.0)
ATOL = 1e-5
OK_STATUSES = {200, 400, 413, 415, 422}


def tiny_config(vocab: int) -> ModelConfig:
    return ModelConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=64, max_position_embeddings=128)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    task = load_task("ag_news", DEMO_DATA, train_per_label=0, test_per_label=10, seed=3)
    return [e.text[:LIMITS.max_chars] for e in task.test]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tokenizer = load_tokenizer("tinylm-wiki-4k")
    torch.manual_seed(0)
    model = BertForClassification(tiny_config(len(tokenizer)), num_labels=4).eval()
    return save_model(model, tmp_path_factory.mktemp("serve") / "model", tokenizer, label_names=LABELS)


@pytest.fixture(scope="module")
def committee_dir(tmp_path_factory):
    tokenizer = load_tokenizer("tinylm-wiki-4k")
    committee = Committee.init(tiny_config(len(tokenizer)), 3, seeds=[5, 6, 7], num_labels=4, label_names=LABELS)
    return save_committee(committee.eval(), tmp_path_factory.mktemp("serve") / "committee", tokenizer)


@pytest.fixture(scope="module")
def predictor(model_dir) -> Predictor:
    return Predictor.load(model_dir)


@pytest.fixture(scope="module")
def server(predictor):
    with running(create_app(predictor, LIMITS)) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client


def post_raw(client: httpx.Client, body: bytes, content_type: str | None = "application/json") -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return client.post("/predict", content=body, headers=headers)


def assert_prediction(answer: dict, expected: dict) -> None:
    assert answer["label"] == expected["label"]
    assert set(answer["probabilities"]) == set(LABELS)
    np.testing.assert_allclose([answer["probabilities"][k] for k in LABELS],
                               [expected["probabilities"][k] for k in LABELS], atol=ATOL)


# ----- good requests -----


def test_one_text_and_a_list_get_the_models_predictions(server, predictor, texts) -> None:
    r = server.post("/predict", json={"text": texts[0]})
    assert r.status_code == 200
    body = r.json()
    assert_prediction(body, predictor.predict([texts[0]])[0])
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
    assert body["latency_ms"] > 0

    r = server.post("/predict", json={"texts": texts[:5]})
    assert r.status_code == 200
    body = r.json()
    assert len(body["predictions"]) == 5 and body["latency_ms"] > 0
    for answer, expected in zip(body["predictions"], predictor.predict(texts[:5]), strict=True):
        assert_prediction(answer, expected)


def test_health_info_and_openapi(server, model_dir) -> None:
    health = server.get("/health").json()
    assert health["status"] == "ok" and health["waiting_texts"] == 0
    info = server.get("/info").json()
    assert info["labels"] == LABELS and info["kind"] == "model" and info["members"] is None
    assert info["runtime"] == "torch" and info["version"] and info["model"] == str(model_dir)
    assert info["limits"]["max_texts"] == LIMITS.max_texts
    schema = server.get("/openapi.json").json()
    assert {"/predict", "/health", "/info"} <= set(schema["paths"])
    responses = schema["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "503"} <= set(responses)


# ----- bad requests: every kind gets its 4xx and a JSON error -----

BAD = {
    "malformed JSON": (b'{"text": "unterminated', 400, "malformed JSON"),
    "not UTF-8": (b'{"text": "\xff\xfe"}', 400, ""),
    "nesting beyond the parser": (b"[" * 4000 + b"]" * 4000, 400, ""),
    "wrong type": (json.dumps({"text": 42}).encode(), 422, "valid string"),
    "list of numbers": (json.dumps({"texts": [1, 2]}).encode(), 422, "valid string"),
    "texts is a string": (json.dumps({"texts": "one"}).encode(), 422, "valid list"),
    "body is a list": (json.dumps(["a text"]).encode(), 422, "invalid request"),
    "body is null": (b"null", 422, "invalid request"),
    "empty body": (b"", 422, "required"),
    "empty text": (json.dumps({"text": ""}).encode(), 422, "empty"),
    "whitespace text": (json.dumps({"text": " \n\t "}).encode(), 422, "empty"),
    "an empty text in a list": (json.dumps({"texts": ["fine", ""]}).encode(), 422, "empty"),
    "empty list": (json.dumps({"texts": []}).encode(), 422, "at least 1"),
    "too many texts": (json.dumps({"texts": ["a"] * (LIMITS.max_texts + 1)}).encode(), 422, "at most 8"),
    "text too long": (json.dumps({"text": "a" * (LIMITS.max_chars + 1)}).encode(), 422, "at most 400 characters"),
    "both fields": (json.dumps({"text": "a", "texts": ["b"]}).encode(), 422, "either"),
    "neither field": (json.dumps({}).encode(), 422, "either"),
    "unknown field": (json.dumps({"text": "a", "lang": "en"}).encode(), 422, "lang"),
    "body too large": (json.dumps({"text": "a" * LIMITS.max_body_bytes}).encode(), 413, "over the limit"),
    "body far too large": (json.dumps({"text": "a" * 5 * LIMITS.max_body_bytes}).encode(), 413, "over the limit"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_gets_a_clear_4xx(server, case) -> None:
    body, status, words = BAD[case]
    r = post_raw(server, body)
    assert r.status_code == status, r.text
    answer = r.json()
    assert words in answer["error"]
    if status == 422:
        assert answer["detail"] and all({"loc", "msg", "type"} <= set(d) for d in answer["detail"])
    assert server.get("/health").json()["status"] == "ok"  # and the server is still there


def test_not_json_content_type_gets_415(server) -> None:
    r = post_raw(server, b"text=hello", "application/x-www-form-urlencoded")
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = post_raw(server, b'{"text": "a"}', "text/plain")
    assert r.status_code == 415


def test_missing_content_type_gets_415(server) -> None:
    r = post_raw(server, b'{"text": "Oil prices rose."}', None)
    assert r.status_code == 415 and "without a content type" in r.json()["error"]
    assert post_raw(server, b'{"text": "Oil prices rose."}', "application/json; charset=utf-8").status_code == 200


def test_chunked_body_over_the_limit_gets_413(server) -> None:
    """Without a Content-Length the guard counts the body as it arrives and stops at the limit."""

    def chunks():
        yield b'{"text": "'
        for _ in range(LIMITS.max_body_bytes // 1000 + 2):
            yield b"a" * 1000
        yield b'"}'

    r = server.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over the limit" in r.json()["error"]


def test_wrong_path_and_method_are_json_4xx(server) -> None:
    r = server.get("/predict")
    assert r.status_code == 405 and "error" in r.json()
    r = server.post("/nowhere", json={"text": "a"})
    assert r.status_code == 404 and "error" in r.json()


# ----- random JSON never gets a 500 -----

json_leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
text_value = st.text(max_size=450) | st.sampled_from(["", "   ", "Oil prices rose.", "\x00", "é" * 401])
predict_body = st.one_of(
    json_value,
    st.dictionaries(st.sampled_from(["text", "texts", "other"]), json_value | text_value, max_size=3),
    st.fixed_dictionaries({"text": text_value}),
    st.fixed_dictionaries({"texts": st.lists(text_value, max_size=10)}),
)


@settings(max_examples=120, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=predict_body | st.binary(max_size=64))
def test_random_json_never_gets_a_5xx(server, body) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    r = post_raw(server, raw)
    event(f"HTTP {r.status_code}")  # pytest --hypothesis-show-statistics shows the mix of answers
    assert r.status_code in OK_STATUSES, (r.status_code, r.text[:300])
    answer = r.json()
    if r.status_code == 200:
        predictions = [answer] if "label" in answer else answer["predictions"]
        assert all(p["label"] in LABELS for p in predictions)
    else:
        assert isinstance(answer["error"], str) and answer["error"]


# ----- micro-batching -----


def test_concurrent_requests_share_passes_and_each_gets_its_own_answer(predictor, texts) -> None:
    """24 concurrent clients: fewer forward passes than requests, and no answer is mixed up with another's."""
    slow_window = ServeSettings(max_texts=8, max_chars=400, max_batch=16, max_wait_ms=50)
    requests = [{"text": t} if i % 3 else {"texts": texts[i:i + 3]} for i, t in enumerate(texts[:24])]

    async def fire(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            return await asyncio.gather(*(client.post("/predict", json=body) for body in requests))

    app = create_app(predictor, slow_window)
    with running(app) as url:
        responses = asyncio.run(fire(url))
        stats = httpx.get(url + "/health").json()["stats"]
    for body, r in zip(requests, responses, strict=True):
        assert r.status_code == 200
        sent = [body["text"]] if "text" in body else body["texts"]
        got = [r.json()] if "text" in body else r.json()["predictions"]
        for answer, expected in zip(got, predictor.predict(sent), strict=True):
            assert_prediction(answer, expected)
    assert stats["requests"] == 24
    assert stats["batches"] < 24 and stats["largest_batch"] > 1
    assert stats["largest_batch"] <= slow_window.max_batch


def features(texts: list[str]) -> np.ndarray:
    """A real, cheap 'model' for batcher tests: each text's length and its count of spaces."""
    return np.array([[len(t), t.count(" ")] for t in texts], dtype=np.float32)


def test_batcher_groups_up_to_max_batch_and_keeps_order() -> None:
    async def scenario() -> tuple[list[np.ndarray], MicroBatcher]:
        batcher = MicroBatcher(features, max_batch=5, max_wait_ms=30, max_queue=100)
        await batcher.start()
        try:
            jobs = [["a b", "c"], ["dd"], ["e f g", "h", "i j"], ["k"], ["x" * 9] * 7]  # the last exceeds max_batch
            results = await asyncio.gather(*(batcher.submit(j) for j in jobs))
        finally:
            await batcher.stop()
        for job, rows in zip(jobs, results, strict=True):
            np.testing.assert_array_equal(rows, features(job))
        return results, batcher

    _, batcher = asyncio.run(scenario())
    sizes = {int(k): v for k, v in batcher.stats.histogram.items()}
    assert batcher.stats.requests == 5 and batcher.stats.texts == 14
    assert max(k for k in sizes if k != 7) <= 5  # a 7-text request goes alone; the others fill passes up to 5
    assert batcher.stats.batches <= 4


def test_batcher_sheds_load_past_the_queue_limit_and_survives_a_failed_pass() -> None:
    calls = []

    def picky(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        if "boom" in texts:
            raise ValueError("this pass failed")
        time.sleep(0.05)  # a pass that takes a while, so the queue fills meanwhile
        return features(texts)

    async def scenario() -> None:
        batcher = MicroBatcher(picky, max_batch=4, max_wait_ms=0, max_queue=4)
        await batcher.start()
        try:
            outcomes = await asyncio.gather(*(batcher.submit(["a", "b", "c"]) for _ in range(4)),
                                            return_exceptions=True)
            assert any(isinstance(o, Overloaded) for o in outcomes)
            assert any(isinstance(o, np.ndarray) for o in outcomes)
            with pytest.raises(ValueError, match="failed"):
                await batcher.submit(["boom"])
            np.testing.assert_array_equal(await batcher.submit(["still here"]), features(["still here"]))
        finally:
            await batcher.stop()

    asyncio.run(scenario())
    assert calls


def test_batcher_stop_answers_every_waiting_request() -> None:
    def slow(texts: list[str]) -> np.ndarray:
        time.sleep(0.2)
        return features(texts)

    async def scenario() -> list:
        batcher = MicroBatcher(slow, max_batch=1, max_wait_ms=0, max_queue=10)
        await batcher.start()
        waiting = [asyncio.create_task(batcher.submit([t])) for t in ("a", "b", "c")]
        await asyncio.sleep(0.05)  # "a" is in its pass, "b" and "c" wait
        await batcher.stop()
        return await asyncio.gather(*waiting, return_exceptions=True)

    outcomes = asyncio.run(scenario())
    assert all(isinstance(o, Stopped) for o in outcomes)


# ----- committees, and the real CLI -----


def test_committee_is_served_with_its_soft_vote(committee_dir, texts) -> None:
    direct = Predictor.load(committee_dir)
    with running(create_app(direct, LIMITS)) as url, httpx.Client(base_url=url, timeout=30) as client:
        info = client.get("/info").json()
        assert info["kind"] == "committee" and info["members"] == 3 and info["labels"] == LABELS
        r = client.post("/predict", json={"texts": texts[:4]})
    assert r.status_code == 200
    reference = Predictor.load(committee_dir).predict(texts[:4])  # the repo's own path: the soft vote
    for answer, expected in zip(r.json()["predictions"], reference, strict=True):
        assert_prediction(answer, expected)


def test_tinylm_serve_command_listens_on_loopback(model_dir, tinylm_serve) -> None:
    with tinylm_serve(model_dir, "--max-texts", "2", startup_s=60) as (base, info):
        assert info["limits"]["max_texts"] == 2
        r = httpx.post(f"{base}/predict", json={"texts": ["a", "b", "c"]}, timeout=30)
        assert r.status_code == 422
        assert httpx.post(f"{base}/predict", json={"text": "Oil rose."}).status_code == 200
