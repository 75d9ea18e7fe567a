"""The admin pages in headless Chromium: log in, filter jobs, read a failed job's error, cancel a running job,
see a predictor's confusion matrix and label-efficiency plot. Jobs run for real on the in-process worker."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import pandas as pd
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from app.db import orm
from app.db.session import session_factory
from tests.app.test_full_loop import COHORT, start, upload
from tests.conftest import wait_for_job
from tests.e2e.conftest import LiveServer

TISSUES = ["cerebellum", "colon", "endometrium", "hippocampus", "kidney", "liver", "placenta"]


def path_of(browser: WebDriver) -> str:
    return urlsplit(browser.current_url).path


def click_to_load(browser: WebDriver, element: WebElement) -> None:
    """Click a link or button and wait until the next page has replaced this one and finished loading.

    The old page is marked with a window property that a new document does not have. Chromium can answer a
    query on a node of the unloading page with a generic error rather than a stale-element one, so the wait
    reads the mark by script and treats any WebDriver error during the swap as "not loaded yet"."""
    browser.execute_script("window.__exprsslOldPage = true;")
    element.click()

    def next_page_loaded(driver: WebDriver) -> bool:
        try:
            return bool(driver.execute_script(
                "return window.__exprsslOldPage === undefined && document.readyState === 'complete';"))
        except WebDriverException:
            return False

    WebDriverWait(browser, 30).until(next_page_loaded)


def log_in(browser: WebDriver, live: LiveServer) -> None:
    browser.get(f"{live.url}/admin/login")
    browser.delete_all_cookies()  # a previous test's server used the same host
    browser.find_element(By.ID, "api_key").send_keys(live.lab.key)
    click_to_load(browser, browser.find_element(By.ID, "login"))
    assert path_of(browser) == "/admin/jobs", browser.page_source[:2000]


def job_rows(browser: WebDriver) -> list[tuple[str | None, str | None]]:
    """(job id, state) of each row, read in one script call: no element handle can go stale between reads."""
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#jobs tbody tr[data-job-id]'))"
        ".map(r => [r.dataset.jobId, r.dataset.state]);"
    )
    return [(job, state) for job, state in rows]


def filter_jobs(browser: WebDriver, **choices: str) -> None:
    for name, value in choices.items():
        Select(browser.find_element(By.ID, f"filter-{name}")).select_by_value(value)
    click_to_load(browser, browser.find_element(By.ID, "apply-filters"))


def fit_logistic_regression(api: httpx.Client, cohort_id: str, fraction: float = 1.0) -> dict[str, str]:
    body = {"cohort_id": cohort_id, "label_column": "tissue", "head": "logistic_regression", "label_fraction": fraction}
    accepted = start(api, "/predictors", body)
    assert wait_for_job(api, accepted["job"]["id"], timeout=120)["state"] == "succeeded"
    return {"job": accepted["job"]["id"], "predictor": accepted["predictor"]["id"]}


def failed_pretraining(live: LiveServer, api: httpx.Client) -> str:
    """A pretraining job that fails for real: its cohort's stored matrix was lost from the artifact store."""
    small = pd.read_parquet(COHORT / "expression.parquet").iloc[:30, :40]
    response = api.post("/cohorts", files={"expression": ("small.csv", small.to_csv(index_label="sample_id"))},
                        data={"name": "small"})
    assert response.status_code == 201, response.text
    cohort_id = response.json()["id"]
    with session_factory()() as session:
        storage_key = session.get_one(orm.Cohort, cohort_id).storage_key
    (live.settings.resolved_artifact_dir / storage_key).unlink()
    accepted = start(api, "/encoders", {"cohort_id": cohort_id, "method": "scarf", "params": {"epochs": 5}})
    job_id: str = accepted["job"]["id"]
    assert wait_for_job(api, job_id, timeout=60)["state"] == "failed"
    return job_id


def test_log_in_with_an_api_key(live: LiveServer, browser: WebDriver) -> None:
    browser.get(f"{live.url}/admin/login")
    browser.delete_all_cookies()
    browser.get(f"{live.url}/admin/jobs")
    assert path_of(browser) == "/admin/login"
    browser.find_element(By.ID, "api_key").send_keys("exs_0123456789ab_not-a-key")
    click_to_load(browser, browser.find_element(By.ID, "login"))
    assert "unknown API key" in browser.find_element(By.ID, "login-error").text

    log_in(browser, live)
    assert "alice (admin)" in browser.find_element(By.ID, "who").text
    cookie = browser.get_cookie("exprssl_session")
    assert cookie is not None and cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/admin"
    assert browser.find_element(By.LINK_TEXT, "Users & keys").is_displayed()

    click_to_load(browser, browser.find_element(By.ID, "logout"))
    assert path_of(browser) == "/admin/login"
    browser.get(f"{live.url}/admin/predictors")
    assert path_of(browser) == "/admin/login"


def test_filter_jobs_by_state(live: LiveServer, browser: WebDriver) -> None:
    with live.api() as api:
        fit = fit_logistic_regression(api, str(upload(api)["id"]))
        failed = failed_pretraining(live, api)
    log_in(browser, live)
    assert {job for job, _ in job_rows(browser)} == {fit["job"], failed}

    filter_jobs(browser, state="failed")
    assert "state=failed" in browser.current_url
    assert job_rows(browser) == [(failed, "failed")]
    assert browser.find_element(By.ID, "page-info").text == "page 1 of 1"

    filter_jobs(browser, state="succeeded")
    assert job_rows(browser) == [(fit["job"], "succeeded")]
    filter_jobs(browser, state="", kind="pretrain")
    assert job_rows(browser) == [(failed, "failed")]
    filter_jobs(browser, kind="", state="running")
    assert job_rows(browser) == [] and browser.find_element(By.ID, "no-jobs").is_displayed()


def test_open_a_failed_job_and_read_its_error(live: LiveServer, browser: WebDriver) -> None:
    with live.api() as api:
        failed = failed_pretraining(live, api)
    log_in(browser, live)
    filter_jobs(browser, state="failed")
    click_to_load(browser, browser.find_element(By.CSS_SELECTOR, f'tr[data-job-id="{failed}"] a'))
    assert path_of(browser) == f"/admin/jobs/{failed}"
    assert browser.find_element(By.ID, "job-state").text == "failed"
    error = browser.find_element(By.ID, "job-error").text
    assert error.startswith("ArtifactIntegrityError: artifact 'cohorts/") and "missing from the store" in error
    assert browser.find_element(By.ID, "retry-job").is_displayed()
    assert not browser.find_elements(By.ID, "cancel-job")


def test_cancel_a_running_job(live: LiveServer, browser: WebDriver) -> None:
    with live.api() as api:
        cohort = upload(api)
        body = {"cohort_id": cohort["id"], "method": "scarf", "params": {"epochs": 500, "batch_size": 64}}
        job_id = start(api, "/encoders", body)["job"]["id"]
        deadline = time.monotonic() + 30
        while api.get(f"/jobs/{job_id}").json()["progress"].get("epoch", 0) < 2:
            assert time.monotonic() < deadline, "the pretraining job did not start training"
            time.sleep(0.1)
    log_in(browser, live)
    browser.get(f"{live.url}/admin/jobs/{job_id}")
    assert browser.find_element(By.ID, "job-state").text == "running"
    click_to_load(browser, browser.find_element(By.ID, "cancel-job"))
    assert "Cancellation requested" in browser.find_element(By.ID, "flash").text

    def cancelled(driver: WebDriver) -> bool:
        click_to_load(driver, driver.find_element(By.ID, "refresh"))
        return bool(driver.find_element(By.ID, "job-state").text == "cancelled")

    WebDriverWait(browser, 60, poll_frequency=0.5).until(cancelled)
    assert "cancellation requested by alice" in browser.find_element(By.ID, "job-events").text
    assert browser.find_element(By.ID, "retry-job").is_displayed()
    progress = browser.find_element(By.ID, "job-progress").text
    assert "of 500" in progress and "epoch 500 of 500" not in progress


def test_predictor_confusion_matrix_and_label_efficiency_plot(live: LiveServer, browser: WebDriver) -> None:
    with live.api() as api:
        cohort_id = str(upload(api)["id"])
        fits = [fit_logistic_regression(api, cohort_id, fraction) for fraction in (1.0, 0.5, 0.25)]
        predictor = api.get(f"/predictors/{fits[0]['predictor']}").json()
    log_in(browser, live)
    click_to_load(browser, browser.find_element(By.LINK_TEXT, "Predictors"))
    click_to_load(browser, browser.find_element(By.CSS_SELECTOR, f'tr[data-predictor-id="{predictor["id"]}"] a'))
    assert path_of(browser) == f"/admin/predictors/{predictor['id']}"
    assert browser.find_element(By.ID, "predictor-head").text == "logistic_regression"

    matrix = browser.find_element(By.ID, "confusion-matrix")
    columns = [th.text for th in matrix.find_elements(By.CSS_SELECTOR, "thead th[scope=col]")]
    rows = [th.text for th in matrix.find_elements(By.CSS_SELECTOR, "tbody th[scope=row]")]
    assert columns == rows == predictor["classes"] == TISSUES
    counts = [int(td.text) for td in matrix.find_elements(By.CSS_SELECTOR, "tbody td")]
    assert len(counts) == 49 and sum(counts) == predictor["split"]["n_test"]

    plot = browser.find_element(By.ID, "label-efficiency-plot")
    loaded = "return arguments[0].complete && arguments[0].naturalWidth"
    width = WebDriverWait(browser, 15).until(lambda driver: driver.execute_script(loaded, plot))
    assert width == 760
    assert plot.get_attribute("src").endswith(f"/admin/predictors/{predictor['id']}/label-efficiency.svg")
