"""The gates as JUnit XML: one test case per gate of each artifact, so GitHub Actions, GitLab and
Jenkins show a failed gate (or an artifact nobody could check) natively, next to the unit tests.

Mapping: a gate that held -> pass; a gate that failed -> <failure>; a gate that could not be
measured here (say latency of a simulated CoreML row) -> <skipped>; an artifact that was refused
or crashed -> one <error> case; one whose runtime is missing here -> <failure>, or <skipped> where
the gates file allows it (allow_not_run); a gate section that matched no artifact -> <failure>
under unmatched = "fail", else <skipped>.
"""

import xml.etree.ElementTree as ET
from pathlib import Path

from ..fileio import atomic_output
from .validate import COULD_NOT_RUN, ERROR, REFUSED

SUITE = "edgemnv2 validate"


def _case(suite: ET.Element, classname: str, name: str) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=classname, name=name, time="0")


def junit_xml(report: dict) -> ET.ElementTree:
    verdict = report["gates"]
    allowed = set(verdict.get("allow_not_run", []))
    root = ET.Element("testsuites", name=SUITE)
    for row in report["artifacts"]:
        classname = f"edgemnv2.{row['target']}.{row['precision']}"
        suite = ET.SubElement(root, "testsuite", name=row["artifact"])
        if row["status"] in (REFUSED, ERROR):
            ET.SubElement(_case(suite, classname, "checked"), "error", message=f"{row['status']}: {row['note']}"[:2000], type=row["status"])
            continue
        if row["status"] == COULD_NOT_RUN:
            case = _case(suite, classname, "checked")
            tag = "skipped" if row["target"] in allowed else "failure"
            ET.SubElement(case, tag, message=f"could not run: {row['note']}"[:2000])
            continue
        for gate in row["gates"]:
            case = _case(suite, classname, gate["name"])
            if not gate["passed"]:  # before "not measured": no_gate_applies has no value and fails
                ET.SubElement(case, "failure", message=gate["describe"], type="gate failed").text = gate["describe"]
            elif gate["value"] is None:
                ET.SubElement(case, "skipped", message=f"{gate['name']} not measured here ({row['measured_on']})")
    # reasons that belong to no row (the folder changed during the run, a comparison refused): the
    # verdict's own case, so the XML never says passed where the exit code says failed
    names = {row["artifact"] for row in report["artifacts"]}
    others = [reason for reason in verdict.get("reasons", []) if reason.split(":")[0] not in names and not reason.startswith("gates [")]
    if others:
        suite = ET.SubElement(root, "testsuite", name="verdict")
        for reason in others:
            ET.SubElement(_case(suite, "edgemnv2.verdict", reason[:80]), "failure", message=reason[:2000])
    unchecked = verdict.get("unchecked", [])
    if unchecked:
        suite = ET.SubElement(root, "testsuite", name="gates file")
        for section in unchecked:
            case = _case(suite, "edgemnv2.gates", section)
            tag = "failure" if verdict.get("unmatched") == "fail" else "skipped"
            ET.SubElement(case, tag, message=f"gates [{section}] matched no artifact in the folder")
    for suite in root:
        cases = list(suite)
        suite.set("tests", str(len(cases)))
        for kind in ("failure", "error", "skipped"):
            suite.set(kind + ("s" if kind != "skipped" else ""), str(sum(1 for c in cases if c.find(kind) is not None)))
    for kind in ("tests", "failures", "errors", "skipped"):
        root.set(kind, str(sum(int(s.get(kind, 0)) for s in root)))
    return ET.ElementTree(root)


def write_junit(report: dict, dest: Path, force: bool = True) -> Path:
    tree = junit_xml(report)
    ET.indent(tree)
    with atomic_output(Path(dest), force=force) as temp:
        tree.write(temp, encoding="utf-8", xml_declaration=True)
    return Path(dest)
