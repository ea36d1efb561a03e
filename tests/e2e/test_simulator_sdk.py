"""The official ``huaweicloudsdkdli`` client against the DLI simulator.

The SDK (test-only) writes ``$HOME/.huaweicloud/application_id`` when imported, so the ``sdk``
fixture points HOME at a temp dir and imports it inside the fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from dli_simulator import Simulator

AK = "SIMAKEXAMPLE00000001"
SK = "sim-secret-key-example"
PID = "0123456789abcdef0123456789abcdef"
OTHER_PID = "fedcba9876543210fedcba9876543210"


@pytest.fixture(scope="module")
def sdk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HOME", str(tmp_path_factory.mktemp("sdk-home")))
        from huaweicloudsdkcore.auth.credentials import BasicCredentials
        from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
        from huaweicloudsdkcore.http.http_config import HttpConfig
        from huaweicloudsdkdli import v1

        yield SimpleNamespace(
            BasicCredentials=BasicCredentials,
            ClientRequestException=ClientRequestException,
            HttpConfig=HttpConfig,
            v1=v1,
        )


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator(credentials={AK: SK}) as simulator:
        yield simulator


def make_client(sdk: SimpleNamespace, sim: Simulator, *, sk: str = SK, pid: str = PID) -> Any:
    config = sdk.HttpConfig.get_default_config()
    config.timeout = (2, 5)
    return (
        sdk.v1.DliClient.new_builder()
        .with_http_config(config)
        .with_credentials(sdk.BasicCredentials(AK, sk, pid))
        .with_endpoint(sim.base_url)
        .build()
    )


@pytest.fixture
def client(sdk: SimpleNamespace, sim: Simulator) -> Any:
    return make_client(sdk, sim)


def test_create_sql_job_then_status(sdk: SimpleNamespace, sim: Simulator, client: Any) -> None:
    body = sdk.v1.CreateSqlJobRequestBody(sql="SELECT count(*) FROM t", queue_name="etl")
    created = client.create_sql_job(sdk.v1.CreateSqlJobRequest(body=body))
    assert created.is_success is True
    assert created.job_type == "QUERY"
    assert created.job_mode == "async"
    assert sim.job_status(PID, created.job_id) == "RUNNING"

    status = client.show_sql_job_status(sdk.v1.ShowSqlJobStatusRequest(job_id=created.job_id))
    assert (status.job_id, status.status, status.queue_name) == (created.job_id, "RUNNING", "etl")
    assert status.statement == "SELECT count(*) FROM t"
    assert status.is_success is True
    assert isinstance(status.start_time, int) and status.start_time > 0
    assert status.duration >= 0
    # The SDK signed the request with AK/SK; the simulator verified it.
    last = sim.requests()[-1]
    assert (last.auth, last.access_key, last.status) == ("aksk", AK, 200)


def test_list_sql_jobs_paging_and_filters(
    sdk: SimpleNamespace, sim: Simulator, client: Any
) -> None:
    etl = sim.add_sql_jobs(PID, 7, queue_name="etl")
    sim.add_sql_jobs(PID, 3, queue_name="adhoc")
    done = sim.submit_sql_job(PID, queue_name="etl", status="FINISHED")

    seen: list[str] = []
    for page in (1, 2, 3):
        request = sdk.v1.ListSqlJobsRequest(
            queue_name="etl", job_status="RUNNING", page_size=3, current_page=page
        )
        answer = client.list_sql_jobs(request)
        assert answer.job_count == 7
        seen.extend(job.job_id for job in answer.jobs)
    assert seen == list(reversed(etl))  # start_time desc, stable
    assert done not in seen

    everything = client.list_sql_jobs(sdk.v1.ListSqlJobsRequest(page_size=100))
    assert everything.job_count == 11 and len(everything.jobs) == 11
    finished = client.list_sql_jobs(sdk.v1.ListSqlJobsRequest(job_status="FINISHED"))
    assert [j.job_id for j in finished.jobs] == [done]
    assert finished.jobs[0].end_time is not None


def test_cancel_sql_job_and_errors(sdk: SimpleNamespace, sim: Simulator, client: Any) -> None:
    job_id = sim.submit_sql_job(PID)
    answer = client.cancel_sql_job(sdk.v1.CancelSqlJobRequest(job_id=job_id))
    assert (answer.is_success, answer.message, answer.status_code) == (True, "", 200)
    assert sim.job_status(PID, job_id) == "CANCELLED"

    with pytest.raises(sdk.ClientRequestException) as again:
        client.cancel_sql_job(sdk.v1.CancelSqlJobRequest(job_id=job_id))
    assert (again.value.status_code, again.value.error_code) == (400, "DLI.0007")
    assert "CANCELLED" in again.value.error_msg

    missing = "5a3a2c2e-1111-4222-8333-944455556666"
    with pytest.raises(sdk.ClientRequestException) as unknown:
        client.cancel_sql_job(sdk.v1.CancelSqlJobRequest(job_id=missing))
    assert (unknown.value.status_code, unknown.value.error_code) == (400, "DLI.0002")
    assert unknown.value.request_id == sim.requests()[-1].request_id
    assert unknown.value.request_id

    with pytest.raises(sdk.ClientRequestException) as status:
        client.show_sql_job_status(sdk.v1.ShowSqlJobStatusRequest(job_id=missing))
    assert status.value.error_code == "DLI.0002"


def test_spark_batches(sdk: SimpleNamespace, sim: Simulator, client: Any) -> None:
    running = sim.add_spark_batch(PID, queue_name="spark")
    done = sim.add_spark_batch(PID, queue_name="spark", state="success")
    sim.add_spark_batch(PID, queue_name="other")

    state = client.show_spark_job_status(sdk.v1.ShowSparkJobStatusRequest(batch_id=running))
    assert (state.id, state.state) == (running, "running")
    listed = client.list_spark_jobs(sdk.v1.ListSparkJobsRequest(queue_name="spark", size=1))
    assert listed.total == 2 and len(listed.sessions) == 1
    assert listed.sessions[0].id == done  # newest first
    assert listed.sessions[0].app_id

    cancelled = client.cancel_spark_job(sdk.v1.CancelSparkJobRequest(batch_id=running))
    assert cancelled.msg == "deleted"
    assert sim.job_status(PID, running) == "dead"
    dead = client.list_spark_jobs(sdk.v1.ListSparkJobsRequest(state="dead"))
    assert [s.id for s in dead.sessions] == [running]

    with pytest.raises(sdk.ClientRequestException) as terminal:
        client.cancel_spark_job(sdk.v1.CancelSparkJobRequest(batch_id=done))
    assert (terminal.value.status_code, terminal.value.error_code) == (400, "DLI.0007")
    with pytest.raises(sdk.ClientRequestException) as unknown:
        client.cancel_spark_job(
            sdk.v1.CancelSparkJobRequest(batch_id="5a3a2c2e-1111-4222-8333-944455556666")
        )
    assert (unknown.value.status_code, unknown.value.error_code) == (404, "DLI.0023")


def test_flink_stop_and_list(sdk: SimpleNamespace, sim: Simulator, client: Any) -> None:
    first = sim.add_flink_job(PID, queue_name="stream")
    second = sim.add_flink_job(PID, queue_name="stream")
    finished = sim.add_flink_job(PID, queue_name="stream", status="job_finish")

    listed = client.list_flink_jobs(sdk.v1.ListFlinkJobsRequest(queue_name="stream", limit=2))
    assert listed.is_success == "true"
    assert listed.job_list.total_count == 3
    assert [j.job_id for j in listed.job_list.jobs] == [finished, second]

    body = sdk.v1.StopFlinkJobsRequestBody(job_ids=[first, 999999, finished])
    answer = client.batch_stop_flink_jobs(sdk.v1.BatchStopFlinkJobsRequest(body=body))
    flags = [item.is_success for item in answer.body]
    assert flags == ["true", "false", "false"]
    assert "999999" in answer.body[1].message
    assert sim.job_status(PID, str(first)) == "job_cancel_success"
    assert sim.job_status(PID, str(second)) == "job_running"

    running = client.list_flink_jobs(sdk.v1.ListFlinkJobsRequest(status="job_running"))
    assert [j.job_id for j in running.job_list.jobs] == [second]
    detail = client.show_flink_job(sdk.v1.ShowFlinkJobRequest(job_id=first))
    assert detail.job_detail.status == "job_cancel_success"


def test_wrong_secret_key_is_401(sdk: SimpleNamespace, sim: Simulator) -> None:
    client = make_client(sdk, sim, sk="not-the-secret")
    with pytest.raises(sdk.ClientRequestException) as error:
        client.cancel_sql_job(sdk.v1.CancelSqlJobRequest(job_id=sim.submit_sql_job(PID)))
    assert (error.value.status_code, error.value.error_code) == (401, "DLI.0014")
    assert sim.cancel_requests()[-1].status == 401


def test_project_mismatch_is_refused(sdk: SimpleNamespace, sim: Simulator) -> None:
    job_id = sim.submit_sql_job(OTHER_PID)
    client = make_client(sdk, sim, pid=OTHER_PID)
    assert client.cancel_sql_job(sdk.v1.CancelSqlJobRequest(job_id=job_id)).is_success
    # The same job is not visible from the other project.
    with pytest.raises(sdk.ClientRequestException) as error:
        make_client(sdk, sim).cancel_sql_job(sdk.v1.CancelSqlJobRequest(job_id=job_id))
    assert error.value.error_code == "DLI.0002"


def test_sdk_lists_what_a_sweep_reads(sdk: SimpleNamespace, sim: Simulator, client: Any) -> None:
    """The watchdog's listings through the official client: ages, durations, tags, the
    state filters and each API's paging."""
    old = sim.submit_sql_job(PID, queue_name="etl", age_s=7200, tags={"dli-cancel": "exempt"})
    young = sim.submit_sql_job(PID, queue_name="etl", age_s=60)
    sql = client.list_sql_jobs(
        sdk.v1.ListSqlJobsRequest(queue_name="etl", job_status="RUNNING", page_size=1)
    )
    assert sql.job_count == 2
    [newest] = sql.jobs
    assert newest.job_id == young and 60_000 <= newest.duration < 120_000
    second = client.list_sql_jobs(
        sdk.v1.ListSqlJobsRequest(
            queue_name="etl", job_status="RUNNING", page_size=1, current_page=2
        )
    )
    [oldest] = second.jobs
    assert oldest.job_id == old and oldest.duration >= 7_200_000
    assert [(t.key, t.value) for t in oldest.tags] == [("dli-cancel", "exempt")]

    batches = [sim.add_spark_batch(PID, queue_name="etl", age_s=age) for age in (300, 200, 100)]
    sim.add_spark_batch(PID, queue_name="etl", state="starting", age_s=50)
    running = [
        client.list_spark_jobs(
            sdk.v1.ListSparkJobsRequest(queue_name="etl", state="running", _from=start, size=2)
        )
        for start in (0, 2)
    ]
    assert [page.total for page in running] == [3, 3]
    assert [s.id for page in running for s in page.sessions] == list(reversed(batches))
    assert running[1].sessions[0].duration >= 300_000

    streams = [sim.add_flink_job(PID, queue_name="etl", age_s=age) for age in (30, 20, 10)]
    sim.add_flink_job(PID, queue_name="etl", status="job_running_exception", age_s=5)
    flink = [
        client.list_flink_jobs(
            sdk.v1.ListFlinkJobsRequest(
                queue_name="etl", status="job_running", offset=offset, limit=2
            )
        )
        for offset in (0, 2)
    ]
    assert [page.job_list.total_count for page in flink] == [3, 3]
    assert [j.job_id for page in flink for j in page.job_list.jobs] == list(reversed(streams))
    assert flink[1].job_list.jobs[0].start_time <= flink[0].job_list.jobs[0].start_time - 10_000
