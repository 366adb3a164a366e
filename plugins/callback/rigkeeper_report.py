# -*- coding: utf-8 -*-
# Copyright: rigkeeper contributors
# Apache-2.0
"""Drift and run reports: JUnit XML, JSON and Markdown, one testcase per host x check."""
from __future__ import annotations

DOCUMENTATION = r"""
name: rigkeeper_report
type: aggregate
short_description: Drift and run reports for people and CI (JUnit XML, JSON, Markdown)
description:
  - >-
    Groups every task result by host and by check. A check is the task variable rigkeeper_check
    when set (the audit's live probes set it to their role), else the role the task belongs to,
    else the prefix of the task's name before " | ", else "play".
  - >-
    A check drifts on a host when any of its tasks reported changed (in check mode, would change)
    or failed. Its testcase then fails, with every drifting task and its diff or message.
  - >-
    A check whose tasks were all skipped is "not managed", never drift. The audit lists the roles a
    host does not manage in a task with the variable rigkeeper_report set to "unmanaged" whose msg is
    that list. Tasks with rigkeeper_report set to "final" or "ignore" are not checks.
  - >-
    The audit's probe (a rigkeeper_probe task with rigkeeper_report set to "probe") reports every
    role at once: each role becomes a check with the probe's status (ok, drift, error) and one item
    per finding (its reasons and diff). A task with rigkeeper_report set to "roles" names the roles
    a host manages and those it does not (its msg, {managed, unmanaged}); a managed role that has no result when the play ends is "not
    reached" (an error), and when the host was unreachable every managed role is an error that
    says so.
  - >-
    A task with rigkeeper_report set to "cases" reports checks of its own: its msg is a list of
    {check, ok, message}, and each entry is a testcase that passes or fails (a failing one is a
    finding, such as a GPU pair whose P2P is not OK: JUnit failure, Markdown FAIL).
  - >-
    While the run goes on, the plugin keeps the host variable rigkeeper_report_drift (the list of
    drifting checks) up to date, so a play can fail on drift. playbooks/audit.yml does, which makes
    ansible-playbook exit non-zero. rigkeeper_report_active tells a play that the plugin runs.
  - >-
    Writes <name>.junit.xml, <name>.json and <name>.md into the report directory at the end and
    prints the Markdown summary, <name> being the playbook's file name without extension.
requirements:
  - enable it with C(callbacks_enabled = rigkeeper_report) in ansible.cfg or C(ANSIBLE_CALLBACKS_ENABLED)
options:
  report_dir:
    description: Where the reports go.
    default: ./reports
    env:
      - name: RIGKEEPER_REPORT_DIR
    ini:
      - section: rigkeeper_report
        key: report_dir
    type: path
"""

import datetime
import json
import os
import time
import xml.etree.ElementTree as ET

from ansible.plugins.callback import CallbackBase

IGNORED_CHECKS = ("rigkeeper_report",)


def task_var(task, name):
    try:
        return (task.vars or {}).get(name)
    except Exception:  # a task without vars
        return None


def check_name(task):
    explicit = task_var(task, "rigkeeper_check")
    if isinstance(explicit, str) and explicit:
        return explicit
    role = getattr(task, "_role", None)
    if role is not None:
        return role.get_name(include_role_fqcn=False) if hasattr(role, "get_name") else str(role)
    name = task.get_name() or ""
    if " | " in name:
        return name.split(" | ", 1)[0].strip()
    return "play"


def task_label(task):
    name = task.get_name() or task.action
    if " | " in name:
        name = name.split(" | ", 1)[1]
    return name


def render_diff(result):
    diffs = result.get("diff")
    if not diffs:
        return ""
    if isinstance(diffs, dict):
        diffs = [diffs]
    out = []
    for d in diffs:
        if not isinstance(d, dict):
            continue
        before, after = d.get("before"), d.get("after")
        header = d.get("before_header") or d.get("after_header") or ""
        if isinstance(before, (dict, list)) or isinstance(after, (dict, list)):
            before, after = json.dumps(before, indent=2, sort_keys=True), json.dumps(after, indent=2, sort_keys=True)
        if before is None and after is None:
            if d.get("prepared"):
                out.append(str(d["prepared"]))
            continue
        import difflib
        out.extend(difflib.unified_diff(str(before or "").splitlines(), str(after or "").splitlines(),
                                        fromfile=f"before: {header}", tofile=f"after: {header}", lineterm=""))
    return "\n".join(out)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "rigkeeper_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.playbook = "run"
        self.started = time.time()
        self.results = {}  # host -> check -> {"ok": n, "changed": [..], "failed": [..], "skipped": n}
        self.variable_manager = None
        self.check_mode = False
        self.managed = {}  # host -> roles it manages (the audit's "roles" task)
        self.unreachable = {}  # host -> why

    def set_options(self, task_keys=None, var_options=None, direct=None):
        super().set_options(task_keys=task_keys, var_options=var_options, direct=direct)
        self.report_dir = self.get_option("report_dir")

    # --- collection -------------------------------------------------------------------------
    def v2_playbook_on_start(self, playbook):
        self.playbook = os.path.splitext(os.path.basename(playbook._file_name))[0]

    def v2_playbook_on_play_start(self, play):
        self.variable_manager = play.get_variable_manager()
        self.check_mode = bool(play.check_mode)
        inventory = getattr(self.variable_manager, "_inventory", None)
        if inventory is not None:
            for host in inventory.get_hosts(play.hosts):
                self.variable_manager.set_host_variable(host.get_name(), "rigkeeper_report_active", True)

    def _entry(self, host, check):
        return self.results.setdefault(host, {}).setdefault(
            check, {"ok": 0, "changed": [], "failed": [], "warned": [], "skipped": 0, "findings": []})

    def _probe(self, result, host):
        """The audit's probe: one check per role, the probe's own verdict."""
        for role, got in sorted((result._result.get("roles") or {}).items()):
            entry = self._entry(host, role)
            entry["probe"] = got.get("status", "error")
            for f in got.get("findings") or []:
                item = {"task": f.get("label") or f.get("id"), "action": f.get("status"),
                        "msg": "; ".join(f.get("reasons") or []) or None,
                        "diff": render_diff({"diff": f.get("diff")}) if f.get("diff") else ""}
                (entry["failed"] if f.get("status") == "error" else
                 entry["warned"] if f.get("status") == "warn" else entry["changed"]).append(item)
            if entry["probe"] == "ok" and not entry["changed"]:
                entry["ok"] += 1
        self._publish(result._host, host)

    def _record(self, result, state):
        task = result._task
        mark = task_var(task, "rigkeeper_report")
        if mark in ("final", "ignore"):
            return
        if mark == "roles":
            msg = result._result.get("msg")
            msg = msg if isinstance(msg, dict) else {"managed": msg if isinstance(msg, list) else []}
            host = result._host.get_name()
            self.managed[host] = [str(r) for r in msg.get("managed") or []]
            for role in msg.get("unmanaged") or []:
                self._entry(host, str(role))["skipped"] += 1
            return
        if mark == "probe":
            if state == "failed":
                host = result._host.get_name()
                for role in self.managed.get(host, []):
                    e = self._entry(host, role)
                    e["probe"] = "error"
                    e["failed"].append({"task": "probe", "action": "", "diff": "",
                                        "msg": "the probe failed: %s" % result._result.get("msg")})
                self._publish(result._host, host)
            elif state == "ok":
                self._probe(result, result._host.get_name())
            return
        if mark == "unmanaged":
            roles = result._result.get("msg")
            for role in roles if isinstance(roles, list) else []:
                self._entry(result._host.get_name(), str(role))["skipped"] += 1
            return
        if mark == "cases":
            cases = result._result.get("msg")
            for case in cases if isinstance(cases, list) else []:
                if not isinstance(case, dict) or not case.get("check"):
                    continue
                entry = self._entry(result._host.get_name(), str(case["check"]))
                if case.get("ok"):
                    entry["ok"] += 1
                else:
                    entry["findings"].append({"task": str(case["check"]), "action": task.action,
                                              "msg": str(case.get("message") or ""), "diff": ""})
            return
        check = check_name(task)
        if check in IGNORED_CHECKS:
            return
        host = result._host.get_name()
        res = result._result
        items = res.get("results") if isinstance(res.get("results"), list) else None
        entry = self._entry(host, check)
        if state == "skipped":
            entry["skipped"] += 1
            return
        if state == "ok" and not res.get("changed"):
            entry["ok"] += 1
            return
        detail = {
            "task": task_label(task),
            "action": task.action,
            "msg": res.get("msg") if isinstance(res.get("msg"), str) else None,
            "diff": render_diff(res),
        }
        if items:
            detail["diff"] = "\n".join(filter(None, [render_diff(i) for i in items if i.get("changed")]))
        entry["failed" if state == "failed" else "changed"].append(detail)
        self._publish(result._host, host)

    def _publish(self, host_obj, host):
        if self.variable_manager is None:
            return
        drift = sorted(c for c, e in self.results.get(host, {}).items()
                       if e["changed"] or e["failed"] or e.get("probe") in ("drift", "error"))
        self.variable_manager.set_host_variable(host, "rigkeeper_report_drift", drift)

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._record(result, "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        host = result._host.get_name()
        msg = result._result.get("msg")
        self.unreachable.setdefault(host, msg)
        self._entry(host, "reachable")["failed"].append(
            {"task": task_label(result._task), "action": "", "msg": msg, "diff": ""})

    # --- reports ----------------------------------------------------------------------------
    def _close_managed(self):
        """Every managed role of every host gets a verdict: unreachable hosts' roles are errors, a
        role the play never reached (the host failed before the probe) is "not reached"."""
        for host, roles in self.managed.items():
            for role in roles:
                entry = self._entry(host, role)
                if entry.get("probe") or entry["ok"] or entry["changed"] or entry["failed"]:
                    continue
                if host in self.unreachable:
                    entry["probe"] = "error"
                    entry["failed"].append({"task": "unreachable", "action": "", "diff": "",
                                            "msg": "host unreachable: %s" % self.unreachable[host]})
                else:
                    entry["probe"] = "not reached"
                    entry["failed"].append({"task": "not reached", "action": "", "diff": "",
                                            "msg": "the play ended on this host before the role was checked"})

    def summary(self):
        self._close_managed()
        hosts = {}
        for host, checks in sorted(self.results.items()):
            hosts[host] = {}
            for check, e in sorted(checks.items()):
                if e.get("probe"):
                    status = e["probe"]
                elif e["failed"] or e["changed"]:
                    status = "drift" if not e["failed"] else "error"
                elif e["findings"]:
                    status = "fail"
                elif e["ok"] == 0 and e["skipped"] > 0:
                    status = "not managed"
                else:
                    status = "ok"
                hosts[host][check] = {"status": status, "ok": e["ok"], "skipped": e["skipped"],
                                      "changed": e["changed"], "failed": e["failed"],
                                      "warnings": e.get("warned", []), "findings": e["findings"]}
        drift = sum(1 for h in hosts.values() for c in h.values() if c["status"] in ("drift", "error", "not reached"))
        fail = sum(1 for h in hosts.values() for c in h.values() if c["status"] == "fail")
        return {
            "playbook": self.playbook,
            "check_mode": self.check_mode,
            "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - self.started, 2),
            "drift_count": drift,
            "fail_count": fail,
            "hosts": hosts,
        }

    @staticmethod
    def junit(summary):
        cases = [c for h in summary["hosts"].values() for c in h.values()]
        suite = ET.Element("testsuite", name=f"rigkeeper.{summary['playbook']}", tests=str(len(cases)),
                           failures=str(sum(1 for c in cases if c["status"] in ("drift", "fail"))),
                           errors=str(sum(1 for c in cases if c["status"] in ("error", "not reached"))),
                           skipped=str(sum(1 for c in cases if c["status"] == "not managed")),
                           time=str(summary["duration_s"]))
        for host, checks in summary["hosts"].items():
            for check, c in checks.items():
                case = ET.SubElement(suite, "testcase", classname=host, name=check)
                if c["status"] == "not managed":
                    ET.SubElement(case, "skipped", message="not managed on this host")
                elif c["status"] == "fail":
                    el = ET.SubElement(case, "failure", message="; ".join(i["msg"] for i in c["findings"])[:500])
                    el.text = "\n\n".join(i["msg"] for i in c["findings"])
                elif c["status"] in ("drift", "error", "not reached"):
                    items = c["failed"] + c["changed"]
                    text = "\n\n".join(f"{i['task']}\n{i['msg'] or ''}\n{i['diff'] or ''}".rstrip() for i in items)
                    tag = "failure" if c["status"] == "drift" else "error"
                    el = ET.SubElement(case, tag, message=f"{len(items)} task(s) drifted: "
                                       + "; ".join(i["task"] for i in items))
                    el.text = text
        root = ET.Element("testsuites")
        root.append(suite)
        ET.indent(root)
        return ET.tostring(root, encoding="unicode", xml_declaration=True)

    @staticmethod
    def markdown(summary):
        head = "no drift" if summary["drift_count"] == 0 else f"{summary['drift_count']} drifted check(s)"
        if summary.get("fail_count"):
            head += f", {summary['fail_count']} failed check(s)"
        lines = [f"## rigkeeper {summary['playbook']}: {head}", ""]
        lines += ["| host | check | status | detail |", "|---|---|---|---|"]
        for host, checks in summary["hosts"].items():
            for check, c in checks.items():
                detail = "; ".join(f"{i['task']}: {i['msg']}" if i.get("msg") and i.get("action") in ("drift", "absent", "error", "warn") else i["task"]
                                   for i in c["failed"] + c["changed"] + c.get("warnings", [])) or ""
                if c["status"] == "fail":
                    detail = "; ".join(i["msg"] for i in c["findings"])
                detail = detail.replace("|", "\\|").replace("\n", " ")
                mark = {"ok": "ok", "drift": "**DRIFT**", "error": "**ERROR**", "fail": "**FAIL**", "not managed": "not managed",
                        "not reached": "**NOT REACHED**", "warn": "ok (warning)"}[c["status"]]
                lines.append(f"| {host} | {check} | {mark} | {detail} |")
        return "\n".join(lines) + "\n"

    def v2_playbook_on_stats(self, stats):
        summary = self.summary()
        os.makedirs(self.report_dir, exist_ok=True)
        base = os.path.join(self.report_dir, summary["playbook"])
        with open(base + ".json", "w") as f:
            json.dump(summary, f, indent=2, sort_keys=True)
        with open(base + ".junit.xml", "w") as f:
            f.write(self.junit(summary))
        md = self.markdown(summary)
        with open(base + ".md", "w") as f:
            f.write(md)
        self._display.display(md)
        self._display.display(f"rigkeeper_report: wrote {base}.junit.xml, .json, .md")
