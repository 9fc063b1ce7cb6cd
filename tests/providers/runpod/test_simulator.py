"""The RunPod simulator is as strict as the real GraphQL API: it parses and validates every
request against RunPod's schema, so a misspelt field, a made-up type or argument, or a
variable of the wrong shape is an error, and inline arguments work like variables."""

from __future__ import annotations

import httpx
import pytest

from .simulator import API_KEY, RunPodSimulator


@pytest.fixture(scope="module")
def sim():
    with RunPodSimulator() as simulator:
        yield simulator


def gql(sim, query, variables=None):
    answer = httpx.post(
        f"{sim.url}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    return answer.status_code, answer.json()


def test_a_misspelt_field_is_a_validation_error(sim):
    status, body = gql(sim, "query { gpuTypes { id displayNam } }")
    assert status == 400
    assert body["errors"][0]["message"] == (
        "Cannot query field 'displayNam' on type 'GpuType'. Did you mean 'displayName'?"
    )
    assert body["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert "data" not in body


def test_a_made_up_input_type_or_argument_is_an_error(sim):
    status, body = gql(
        sim,
        "mutation($input: PodDeployInput) { podFindAndDeployOnDemand(input: $input) { id } }",
        {"input": {}},
    )
    assert status == 400 and "Unknown type 'PodDeployInput'" in body["errors"][0]["message"]
    status, body = gql(sim, 'query { pod(podId: "x") { id } }')
    assert status == 400 and "Unknown argument 'podId'" in body["errors"][0]["message"]


def test_a_variable_with_an_unknown_input_field_is_refused(sim):
    status, body = gql(
        sim,
        "query($input: PodFilter) { pod(input: $input) { id } }",
        {"input": {"podId": "x", "podid": "y"}},
    )
    assert status == 400 and body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert "podid" in body["errors"][0]["message"]


def test_unparseable_query_and_bad_key(sim):
    status, body = gql(sim, "query { gpuTypes { id }")
    assert status == 400 and body["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    answer = httpx.post(f"{sim.url}/graphql", json={"query": "{ myself { id } }"}, timeout=10)
    assert answer.status_code == 401


def test_gpu_type_filter_and_lowest_price_without_alias(sim):
    status, body = gql(
        sim,
        'query { gpuTypes(input: {id: "NVIDIA GeForce RTX 4090"}) { id securePrice '
        "lowestPrice(input: {gpuCount: 2}) { minimumBidPrice uninterruptablePrice } } }",
    )
    assert status == 200, body
    assert body["data"]["gpuTypes"] == [
        {
            "id": "NVIDIA GeForce RTX 4090",
            "securePrice": 0.69,
            "lowestPrice": {"minimumBidPrice": 0.2, "uninterruptablePrice": 0.34},
        }
    ]
    status, body = gql(
        sim,
        "query($f: GpuTypeFilter, $p: GpuLowestPriceInput) { gpuTypes(input: $f) { id "
        "lowestPrice(input: $p) { uninterruptablePrice } } }",
        {"f": {"ids": ["NVIDIA H100 80GB HBM3"]}, "p": {"gpuCount": 1, "secureCloud": True}},
    )
    assert body["data"]["gpuTypes"] == [
        {"id": "NVIDIA H100 80GB HBM3", "lowestPrice": {"uninterruptablePrice": 2.99}}
    ]


def test_inline_and_variable_arguments_reach_the_same_pod(sim):
    status, body = gql(
        sim,
        'mutation { podFindAndDeployOnDemand(input: {name: "inline", imageName: "img", '
        'gpuTypeId: "NVIDIA GeForce RTX 4090", cloudType: SECURE, gpuCount: 1, '
        'env: [{key: "PUBLIC_KEY", value: "ssh-ed25519 AAAA test"}]}) { id desiredStatus } }',
    )
    assert status == 200, body
    pod_id = body["data"]["podFindAndDeployOnDemand"]["id"]
    inline = gql(sim, f'query {{ pod(input: {{podId: "{pod_id}"}}) {{ id podType }} }}')
    by_variable = gql(
        sim, "query($i: PodFilter) { pod(input: $i) { id podType } }", {"i": {"podId": pod_id}}
    )
    assert inline == by_variable == (200, {"data": {"pod": {"id": pod_id, "podType": "RESERVED"}}})
    assert gql(sim, f'mutation {{ podTerminate(input: {{podId: "{pod_id}"}}) }}') == (
        200,
        {"data": {"podTerminate": None}},
    )


def test_a_business_refusal_is_an_error_on_its_field(sim):
    sim.refuse_capacity(1)
    status, body = gql(
        sim,
        'mutation { podRentInterruptable(input: {bidPerGpu: 0.5, gpuTypeId: "NVIDIA H100 80GB '
        'HBM3", gpuCount: 1, name: "x", imageName: "y"}) { id } }',
    )
    assert status == 200
    assert body["data"] == {"podRentInterruptable": None}
    assert body["errors"][0]["path"] == ["podRentInterruptable"]
    assert body["errors"][0]["message"].startswith("There are no longer any instances available")
