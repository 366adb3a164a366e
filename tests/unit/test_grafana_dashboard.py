"""The Grafana dashboard (docs/grafana/rigkeeper.json) and the alert rules against the self-audit's metric
names: every metric a panel or an alert uses is one the self-audit writes (METRICS below, the list
docs/monitoring.md documents), every such metric has a panel, every query is scoped to the $instance
variable and is PromQL that promtool parses. A renamed metric turns these red.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / 'docs/grafana/rigkeeper.json'
RULES = REPO / 'roles/monitoring/files/prometheus/rigkeeper-alerts.yml'
DOC = REPO / 'docs/monitoring.md'

# The metric families the self-audit writes into node_exporter's textfile collector: the
# exporter's own list (plugins/module_utils/rigkeeper_metrics.py), so a renamed metric turns these red.
from ansible_collections.rigkeeper.gpu.plugins.module_utils.rigkeeper_metrics import NAMES  # noqa: E402

METRICS = set(NAMES)
# Digits included: rigkeeper_p2p_* has one.
METRIC_TOKEN = re.compile(r'\brigkeeper_[a-z0-9_]+')
INSTANCE_VARIABLE = 'label_values(rigkeeper_selfaudit_last_run_timestamp_seconds, instance)'
DS_UID = '${datasource}'


def _dashboard():
    return json.loads(DASHBOARD.read_text())


def _panels(dash):
    for panel in dash['panels']:
        yield panel
        yield from panel.get('panels', [])     # panels inside collapsed rows


def _exprs(dash):
    return [(panel['title'], t['expr']) for panel in _panels(dash) for t in panel.get('targets', [])]


def _alert_texts():
    doc = yaml.safe_load(RULES.read_text())
    for rule in (r for g in doc['groups'] for r in g['rules']):
        yield rule.get('alert', rule.get('record')), ' '.join([rule['expr'], *rule.get('annotations', {}).values()])


def test_every_metric_a_panel_uses_is_written_by_the_self_audit():
    unknown = {(title, m) for title, expr in _exprs(_dashboard()) for m in METRIC_TOKEN.findall(expr) if m not in METRICS}
    assert unknown == set()


def test_every_metric_an_alert_uses_is_written_by_the_self_audit():
    unknown = {(name, m) for name, text in _alert_texts() for m in METRIC_TOKEN.findall(text) if m not in METRICS}
    assert unknown == set()


def test_every_metric_has_a_panel():
    used = {m for _, expr in _exprs(_dashboard()) for m in METRIC_TOKEN.findall(expr)}
    assert METRICS - used == set()


def test_the_documented_metrics_are_the_list():
    rows = re.findall(r'^\|\s*`(rigkeeper_[a-z0-9_]+)', DOC.read_text(), flags=re.M)
    assert len(rows) == len(set(rows)), 'a metric documented twice'
    assert set(rows) == METRICS


def test_datasource_is_an_input_and_a_variable():
    dash = _dashboard()
    assert [(i['name'], i['type'], i['pluginId']) for i in dash['__inputs']] == [('DS_PROMETHEUS', 'datasource', 'prometheus')]
    variables = {v['name']: v for v in dash['templating']['list']}
    assert variables['datasource']['type'] == 'datasource' and variables['datasource']['query'] == 'prometheus'
    assert variables['datasource']['current']['value'] == '${DS_PROMETHEUS}'
    instance = variables['instance']
    assert instance['type'] == 'query'
    assert instance['definition'] == INSTANCE_VARIABLE and instance['query']['query'] == INSTANCE_VARIABLE
    assert instance['datasource']['uid'] == DS_UID


def test_every_panel_and_query_reads_the_templated_datasource():
    dash = _dashboard()
    for panel in _panels(dash):
        if panel['type'] == 'row':
            continue
        assert panel['datasource'] == {'type': 'prometheus', 'uid': DS_UID}, panel['title']
        assert panel['targets'], panel['title']
        for target in panel['targets']:
            assert target['datasource'] == {'type': 'prometheus', 'uid': DS_UID}, panel['title']


def test_every_selector_is_scoped_to_the_instance_variable():
    for title, expr in _exprs(_dashboard()):
        for m in re.finditer(r'\brigkeeper_[a-z0-9_]+', expr):
            assert expr[m.end():].startswith('{instance=~"$instance"'), (title, expr)


def test_panel_ids_unique_and_layout_fits():
    dash = _dashboard()
    ids = [p['id'] for p in _panels(dash)]
    assert len(ids) == len(set(ids))
    for panel in _panels(dash):
        pos = panel['gridPos']
        assert pos['x'] >= 0 and pos['w'] > 0 and pos['x'] + pos['w'] <= 24, panel['title']
    assert dash['uid'] == 'rigkeeper' and dash['schemaVersion'] >= 36


def test_every_query_is_promql_promtool_parses(tmp_path):
    promtool = shutil.which('promtool')
    if promtool is None:
        if os.environ.get('CI') == 'true':
            pytest.fail("promtool is not installed, and CI=true does not allow skipping: install Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian's prometheus package; ./rk setup installs it)")
    exprs = [expr.replace('$instance', '.*') for _, expr in _exprs(_dashboard())]
    rules = {'groups': [{'name': 'dashboard', 'rules': [{'record': f'dashboard:q{i}', 'expr': e} for i, e in enumerate(exprs)]}]}
    path = tmp_path / 'dashboard-queries.yml'
    path.write_text(yaml.safe_dump(rules))
    res = subprocess.run([promtool, 'check', 'rules', str(path)], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f'SUCCESS: {len(exprs)} rules found' in res.stdout
