"""The alert rules (deploy/prometheus/), checked and unit-tested by promtool; the scrape settings shipped with them."""
import re
import shutil
import subprocess

import yaml

from conftest import ROOT, missing

RULES = ROOT / "deploy" / "prometheus"


def promtool() -> str:
    path = shutil.which("promtool")
    if not path:
        missing("promtool", "Debian/Ubuntu: sudo apt-get install prometheus")
    return path


def run(*args: str, cwd=RULES) -> subprocess.CompletedProcess:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_rules_and_the_configuration_pass_promtool_check():
    r = run("check", "rules", "alerts.yml")
    assert r.returncode == 0 and "SUCCESS: 5 rules found" in r.stdout, r.stdout + r.stderr
    r = run("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_fires_in_its_unit_test_and_stays_quiet_beside_it():
    r = run("test", "rules", "alerts_test.yml")
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    tests = yaml.safe_load((RULES / "alerts_test.yml").read_text())["tests"]
    rules = [rule["alert"] for group in yaml.safe_load((RULES / "alerts.yml").read_text())["groups"]
             for rule in group["rules"]]
    fired = {case["alertname"] for t in tests for case in t["alert_rule_test"] if case["exp_alerts"]}
    quiet = {case["alertname"] for t in tests for case in t["alert_rule_test"] if not case["exp_alerts"]}
    assert fired == quiet == set(rules) == {"BearCorrectionsHigh", "BearNoneOfTheseJumped", "BearAnswersSlow",
                                            "BearNoPreheatedKernel", "BearReplicaDown"}


def test_the_unit_tests_catch_a_changed_threshold(tmp_path):
    """The tests can fail: with p99's 2 s made 5 s, or the corrections' 5% made 20%, promtool says which alert."""
    for old, new, alert in [("> 2\n", "> 5\n", "BearAnswersSlow"), ("> 0.05", "> 0.2", "BearCorrectionsHigh")]:
        rules = (RULES / "alerts.yml").read_text()
        assert rules.count(old) == 1
        (tmp_path / "alerts.yml").write_text(rules.replace(old, new))
        shutil.copy(RULES / "alerts_test.yml", tmp_path)
        r = run("test", "rules", "alerts_test.yml", cwd=tmp_path)
        assert r.returncode != 0 and f"alertname: {alert}" in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_kubernetes_pods_are_annotated_for_prometheus_on_the_port_that_serves_metrics():
    manifest = ROOT / "deploy" / "kubernetes" / "bear-classifier.yaml"
    docs = {d["kind"]: d for d in yaml.safe_load_all(manifest.read_text())}
    pod = docs["Deployment"]["spec"]["template"]
    notes = pod["metadata"]["annotations"]
    port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert notes == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert re.fullmatch(r"[\d./, a-f:]+", env["BEAR_TRUSTED_PROXIES"])  # where Prometheus scrapes from is believed
