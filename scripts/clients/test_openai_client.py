"""The official `openai` Python client against `pagedattn serve`.

Completions and chat, streaming and not, `n`, usage, logprobs, a stop string, a 400
surfacing as `openai.BadRequestError`, a 404 as `openai.NotFoundError`, and /metrics
parsed by the Prometheus client's own OpenMetrics parser. Run by scripts/clients/run.sh;
the server's address comes in PAGEDATTN_URL.
"""

import os
import sys
import urllib.request

import openai
from prometheus_client.openmetrics.parser import text_string_to_metric_families

URL = os.environ["PAGEDATTN_URL"]
client = openai.OpenAI(base_url=URL + "/v1", api_key="unused", max_retries=0, timeout=120)
MODEL = client.models.list().data[0].id

results = []


def check(name):
    def wrap(f):
        try:
            f()
            results.append((name, None))
            print(f"ok   {name}")
        except Exception as e:  # a failed check is reported, the others still run
            results.append((name, e))
            print(f"FAIL {name}: {e!r}")
        return f

    return wrap


@check("completion, not streaming: text, finish reason, usage")
def _():
    r = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=8, temperature=0)
    c = r.choices[0]
    assert isinstance(c.text, str) and c.text, r
    assert c.finish_reason in ("stop", "length"), c.finish_reason
    assert r.usage.prompt_tokens == 5, r.usage
    assert 1 <= r.usage.completion_tokens <= 8, r.usage
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


@check("completion, streaming equals not streaming (greedy), usage chunk")
def _():
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=20, temperature=0)
    whole = client.completions.create(**kw).choices[0].text
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole, (text, whole)
    usage = [c.usage for c in chunks if c.usage]
    assert usage and usage[-1].completion_tokens == 20, usage


@check("chat, not streaming, through the model's template")
def _():
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=30, temperature=0
    )
    m = r.choices[0].message
    assert m.role == "assistant" and "Paris" in m.content, m
    assert r.usage.prompt_tokens > 20, r.usage  # the template's system turn is there


@check("chat, streaming equals not streaming (greedy)")
def _():
    kw = dict(model=MODEL, messages=[{"role": "user", "content": "Name three colors."}], max_tokens=25, temperature=0)
    whole = client.chat.completions.create(**kw).choices[0].message.content
    chunks = list(client.chat.completions.create(stream=True, **kw))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole, (text, whole)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


@check("n = 3 with a seed: three choices, reproducible")
def _():
    kw = dict(model=MODEL, prompt="My favourite food is", max_tokens=10, temperature=1.0, n=3, seed=5)
    a = client.completions.create(**kw)
    b = client.completions.create(**kw)
    assert sorted(c.index for c in a.choices) == [0, 1, 2]
    assert [c.text for c in a.choices] == [c.text for c in b.choices]
    assert 3 <= a.usage.completion_tokens <= 30, a.usage


@check("logprobs and a stop string")
def _():
    r = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == r.usage.completion_tokens and all(x <= 0 for x in lp.token_logprobs)
    text = r.choices[0].text
    stop = text[len(text) // 2 :][:2]
    s = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0, stop=[stop])
    assert s.choices[0].text == text[: text.find(stop)], (s.choices[0].text, text, stop)
    assert s.choices[0].finish_reason == "stop"


@check("a bad request surfaces as openai.BadRequestError")
def _():
    try:
        client.completions.create(model=MODEL, prompt="x", max_tokens=10**6)
    except openai.BadRequestError as e:
        assert e.status_code == 400
        assert "maximum length" in str(e), e
    else:
        raise AssertionError("no error")
    try:
        client.chat.completions.create(model=MODEL, messages=[], max_tokens=3)
    except openai.BadRequestError as e:
        assert "messages" in str(e), e
    else:
        raise AssertionError("no error")


@check("an unknown model surfaces as openai.NotFoundError")
def _():
    try:
        client.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    except openai.NotFoundError as e:
        assert e.status_code == 404
    else:
        raise AssertionError("no error")


@check("/metrics parses as OpenMetrics with vLLM's names")
def _():
    text = urllib.request.urlopen(URL + "/metrics", timeout=10).read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in (
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
        "vllm:num_preemptions",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
    ):
        assert name in families, (name, sorted(families))
    gen = [s.value for s in families["vllm:generation_tokens"].samples if s.name.endswith("_total")]
    assert gen and gen[0] > 0, gen


failed = sum(1 for _, e in results if e is not None)
print(f"{len(results) - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
