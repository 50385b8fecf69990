//! Watching jobs: CPU and memory series of a busy task, `kiln top`, and
//! kiln's own numbers at /metrics read by a Prometheus text parser.

mod common;

use std::time::{Duration, Instant};

use common::{until, Server};
use serde_json::Value;

/// The newest value of a series, if it has one.
fn last(v: &Value, task: &str, name: &str) -> Option<f64> {
    v["series"]
        .as_array()?
        .iter()
        .find(|s| s["task"] == task && s["name"] == name)?["points"]
        .as_array()?
        .last()?["value"]
        .as_f64()
}

#[test]
fn a_busy_task_shows_its_cpu_and_memory() {
    let s = Server::start_with(&[
        "--cpus",
        "4",
        "--memory",
        "8Gi",
        "--stop-grace",
        "1",
        "--no-sandbox",
        "--sample-every",
        "1",
    ]);
    // One core spinning, and about 100 MB held in a bash variable.
    let id = s.submit(
        "busy",
        "name: busy\ncommand: |\n  x=$(head -c 100000000 /dev/zero | tr '\\0' a)\n  echo held\n  while :; do :; done\n",
    );
    s.wait_state(&id, "RUNNING", 30);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (cpu, mem) = loop {
        let (status, v) = s.api("GET", &format!("/jobs/{id}/metrics?last=true"), None);
        assert_eq!(status, 200, "{v}");
        let cpu = last(&v, "main-0", "cpu").unwrap_or(0.0);
        let mem = last(&v, "main-0", "memory").unwrap_or(0.0);
        if cpu > 0.5 && mem > 90e6 {
            break (cpu, mem);
        }
        assert!(
            Instant::now() < deadline,
            "no load seen: cpu={cpu} memory={mem}: {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(cpu < 1.5, "one spinning core, not {cpu}");
    assert!(mem < 1e9, "{mem}");
    let top = s.ok(&["top", &id]);
    assert!(
        top.contains("main-0") && top.contains("MiB"),
        "kiln top: {top}"
    );
    // Filters: one name, a time window that holds nothing.
    let (_, v) = s.api("GET", &format!("/jobs/{id}/metrics?name=memory"), None);
    assert!(v["series"].as_array().is_some_and(|a| a.len() == 1), "{v}");
    let (_, v) = s.api("GET", &format!("/jobs/{id}/metrics?from=1&to=2"), None);
    assert!(
        v["series"].as_array().is_some_and(|a| a
            .iter()
            .all(|s| s["points"].as_array().is_some_and(Vec::is_empty))),
        "{v}"
    );
    s.ok(&["stop", &id]);
    // The series outlive the job.
    s.wait_state(&id, "STOPPED", 30);
    let (_, v) = s.api("GET", &format!("/jobs/{id}/metrics"), None);
    assert!(last(&v, "main-0", "cpu").is_some(), "{v}");
}

#[test]
fn prometheus_reads_kiln_s_own_numbers() {
    let s = Server::start();
    let ok = s.submit("ok", "name: ok\ncommand: 'true'\n");
    s.wait_state(&ok, "SUCCEEDED", 30);
    let hold = s.submit("hold", "name: hold\ngpus: 3\ncommand: sleep 300\n");
    s.wait_state(&hold, "RUNNING", 30);
    let wait = s.submit("wait", "name: wait\ngpus: 2\ncommand: 'true'\n");
    // Until the scheduler has looked at it, it is not in the queue yet.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !s.job(&wait)["pendingReason"]
        .as_str()
        .is_some_and(|r| r.contains("GPU"))
    {
        assert!(Instant::now() < deadline, "{}", s.job(&wait));
        std::thread::sleep(Duration::from_millis(20));
    }
    // Anyone can scrape, as Prometheus does, without a token.
    let text = ureq::get(&format!("{}/metrics", s.url))
        .call()
        .expect("scraped")
        .body_mut()
        .read_to_string()
        .expect("text");
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid exposition");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        scrape
            .samples
            .iter()
            .find(|m| m.metric == name && label.is_none_or(|(k, v)| m.labels.get(k) == Some(v)))
            .and_then(|m| match m.value {
                prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name} {label:?} missing:\n{text}"))
    };
    assert_eq!(value("kiln_jobs", Some(("state", "SUCCEEDED"))), 1.0);
    assert_eq!(value("kiln_jobs", Some(("state", "RUNNING"))), 1.0);
    assert_eq!(value("kiln_jobs", Some(("state", "WAITING"))), 1.0);
    assert_eq!(value("kiln_queue_length", None), 1.0);
    assert_eq!(value("kiln_gpus", None), 4.0);
    assert_eq!(value("kiln_gpus_allocated", None), 3.0);
    let histogram_count = |name: &str| {
        scrape
            .samples
            .iter()
            .filter(|m| m.metric == name)
            .map(|m| match &m.value {
                prometheus_parse::Value::Histogram(h) => {
                    h.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                _ => 0.0,
            })
            .sum::<f64>()
    };
    assert!(
        histogram_count("kiln_schedule_pass_seconds") >= 1.0,
        "{text}"
    );
    assert!(histogram_count("kiln_api_request_seconds") >= 3.0, "{text}");
    assert!(text.contains("route=\"/api/v1/jobs\""), "{text}");
    // The waiting job first: once the holder stops, it would start and end
    // before a stop could reach it.
    s.ok(&["stop", &wait]);
    s.ok(&["stop", &hold]);
}

/// The GPU path end to end with a stand-in for NVML: the server reads its
/// GPU readings from a file the test writes. The task's GPU series follow
/// the readings; GPUs at 0% get the job a notice and a warning, use clears
/// it, and with release set the job is stopped, saying why.
#[test]
fn gpu_use_is_sampled_and_idle_gpus_are_noticed_then_released() {
    let dir = tempfile::tempdir().expect("tmp");
    let readings = dir.path().join("gpus.json");
    let write = |util: u32, used: u64| {
        let text = format!(
            r#"[{{"index": 0, "utilizationPercent": {util}, "memoryUsedBytes": {used}, "processes": []}},
                {{"index": 1, "utilizationPercent": {util}, "memoryUsedBytes": {used}, "processes": []}}]"#
        );
        // Whole-file replace, so the server never reads half a file.
        let tmp = readings.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &readings).expect("rename");
    };
    write(80, 0);
    let s = Server::start_with(&[
        "--fake-gpus",
        "2",
        "--fake-gpu-usage",
        readings.to_str().expect("utf8"),
        "--no-sandbox",
        "--stop-grace",
        "1",
        "--sample-every",
        "1",
        "--idle-gpu-notice",
        "2s",
        "--idle-gpu-release",
        "20s",
    ]);
    let id = s.submit("holder", "name: holder\ngpus: 1\ncommand: sleep 600\n");
    let job = s.wait_state(&id, "RUNNING", 30);
    let gpu = common::task(&job, "main-0")["gpus"][0]
        .as_u64()
        .expect("a GPU placed");
    let util = format!("gpu{gpu}.utilization");
    until(30, "utilisation series", || {
        let (_, v) = s.api("GET", &format!("/jobs/{id}/metrics?last=true"), None);
        match last(&v, "main-0", &util) {
            Some(80.0) => Ok(()),
            _ => Err(v.to_string()),
        }
    });
    let top = s.ok(&["top", &id]);
    assert!(top.contains(&format!("gpu{gpu} 80% ")), "kiln top: {top}");
    // No other GPU's series: the task holds one.
    let (_, v) = s.api("GET", &format!("/jobs/{id}/metrics"), None);
    let names: Vec<&str> = v["series"]
        .as_array()
        .expect("series")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .filter(|n| n.starts_with("gpu"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let kinds = |s: &Server| -> Vec<(String, String)> { common::events(&s.job(&id)) };
    write(0, 0);
    until(30, "idle notice", || {
        let k = kinds(&s);
        k.iter()
            .any(|(k, m)| k == "gpus-idle" && m.contains("0% use"))
            .then_some(())
            .ok_or(format!("{k:?}"))
    });
    let (_, shown) = s.api("GET", &format!("/jobs/{id}"), None);
    let notice = shown["notices"][0].as_str().unwrap_or_default().to_owned();
    assert!(notice.contains("0% use"), "{shown}");
    let show = s.ok(&["show", &id]);
    assert!(
        show.contains("Notice:    its GPUs have shown 0% use"),
        "{show}"
    );

    // In use again: an event, and the notice is gone.
    write(35, 0);
    until(30, "busy again", || {
        let k = kinds(&s);
        k.iter()
            .any(|(k, _)| k == "gpus-busy")
            .then_some(())
            .ok_or(format!("{k:?}"))
    });
    until(10, "notice cleared", || {
        let (_, v) = s.api("GET", &format!("/jobs/{id}"), None);
        v.get("notices")
            .is_none()
            .then_some(())
            .ok_or(v.to_string())
    });

    // Idle long enough to be released.
    write(0, 0);
    let done = s.wait_state(&id, "STOPPED", 60);
    let events = common::events(&done);
    assert!(
        events
            .iter()
            .any(|(k, m)| k == "stop-requested" && m.contains("GPUs idle")),
        "{events:?}"
    );
    assert_eq!(
        events.iter().filter(|(k, _)| k == "gpus-idle").count(),
        3,
        "noticed, noticed again, released: {events:?}"
    );
}
