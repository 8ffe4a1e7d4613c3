#!/usr/bin/env python3
"""Strict grader for Autobahn|Testsuite (wstest) reports.

wstest exits 0 whatever happens, so pass/fail is decided here, from the
report's index.json (agent -> case id -> behavior/behaviorClose/duration/
reportfile) checked against the full case list in
shared/conformance/autobahn_cases.tsv.

Strict means, for every expected case:
  * the case is present in index.json (missing = failed: the testee died,
    hung, or the run was cut short);
  * behavior == "OK" and behaviorClose == "OK";
  * except: "INFORMATIONAL" passes for the cases wstest grades that way
    (7.1.6, 7.13.1, 7.13.2), and "UNIMPLEMENTED" passes for sections 12/13
    (permessage-deflate) only with --allow-unimplemented-deflate;
  * anything else (NON-STRICT, FAILED, WRONG CODE, UNCLEAN,
    FAILED BY CLIENT, ...) fails.

The expected case set is resolved exactly like wstest resolves a spec's
"cases"/"exclude-cases" patterns; it is read from <report dir>/spec.json
(written by run.sh) unless --cases/--sections/--all override it, and
defaults to sections 1-10 (301 cases).

Output: one FAIL block per failing case, then one line per side,
    server: 301 passed, 0 failed
and, when both sides are graded, a final total line
    autobahn: 602 passed, 0 failed
Exit status: 0 if everything passed, 1 if anything failed, 2 on usage/input
errors.

Markdown: --markdown FILE writes/updates one marked section per graded side
of a generated conformance file (e.g. CONFORMANCE.md), leaving the other
side's section in place, so
    grade.py --server DIR --client DIR --markdown CONFORMANCE.md
writes both at once.
"""

import argparse
import csv
import datetime
import json
import os
import re
import shlex
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

# wstest's case classes that set behavior = Case.INFORMATIONAL.
INFORMATIONAL_CASES = {"7.1.6", "7.13.1", "7.13.2"}
DEFLATE_SECTIONS = {12, 13}
DEFAULT_SECTIONS = list(range(1, 11))
SIDES = ("server", "client")
SIDE_TITLES = {
    "server": "Server (wstest fuzzingclient against the duplex echo server)",
    "client": "Client (duplex client against wstest fuzzingserver)",
}


class InputError(Exception):
    pass


# --------------------------------------------------------------------------
# case list


def shared_conformance_dir():
    cand = os.path.join(REPO, "..", "shared", "conformance")
    if os.path.isdir(cand):
        return os.path.abspath(cand)
    # git worktree: shared/ sits beside the main checkout
    try:
        common = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "--path-format=absolute", "--git-common-dir"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        common = ""
    if common:
        cand2 = os.path.join(common, "..", "..", "shared", "conformance")
        if os.path.isdir(cand2):
            return os.path.abspath(cand2)
    return os.path.abspath(cand)


def default_tsv():
    return os.environ.get("AUTOBAHN_CASES_TSV") or os.path.join(
        shared_conformance_dir(), "autobahn_cases.tsv")


def id_tuple(case_id):
    return tuple(int(x) for x in case_id.split("."))


def load_cases(tsv_path):
    if not os.path.isfile(tsv_path):
        raise InputError("case list not found: %s (set --tsv or AUTOBAHN_CASES_TSV)" % tsv_path)
    with open(tsv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    cases = {}
    for r in rows:
        cid = (r.get("id") or "").strip()
        if not cid:
            continue
        cases[cid] = r
    if not cases:
        raise InputError("no cases in %s" % tsv_path)
    return cases


def resolve_patterns(patterns, all_ids):
    """wstest's CaseSet.resolveCasePatternList: '*' patterns are regexes
    ('.' literal, '*' -> '.*') matched at the start of the id; others exact."""
    out = []
    for p in patterns:
        p = p.strip()
        if not p:
            continue
        if "*" in p:
            rx = re.compile(p.replace(".", r"\.").replace("*", ".*"))
            out.extend(sorted((c for c in all_ids if rx.match(c)), key=id_tuple))
        else:
            if p not in all_ids:
                raise InputError("unknown case id %r (not in the case list)" % p)
            out.append(p)
    return out


def resolve_cases(include, exclude, all_ids):
    inc = set(resolve_patterns(include, all_ids))
    exc = set(resolve_patterns(exclude or [], all_ids))
    return sorted(inc - exc, key=id_tuple)


def parse_sections(spec):
    """'1-10' / '1,2,5' / '1-4,7' -> [1, 2, ...]"""
    out = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise InputError("bad --sections value %r (use e.g. 1-10 or 1,2,5)" % spec)
        a = int(m.group(1))
        b = int(m.group(2) or a)
        if b < a:
            raise InputError("bad section range %r" % part)
        out.extend(range(a, b + 1))
    if not out:
        raise InputError("empty --sections")
    return out


def section_patterns(sections):
    return ["%d.*" % s for s in sections]


def section_of(case_id):
    return int(case_id.split(".")[0])


# --------------------------------------------------------------------------
# grading


def load_json(path, what):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise InputError("%s not found: %s" % (what, path))
    except ValueError as e:
        raise InputError("%s is not valid JSON (%s): %s" % (what, e, path))


def report_paths(location):
    """Accept a report dir or an index.json path."""
    if os.path.isdir(location):
        return os.path.abspath(location), os.path.join(os.path.abspath(location), "index.json")
    return os.path.dirname(os.path.abspath(location)), os.path.abspath(location)


def judge(case_id, entry, allow_unimpl_deflate):
    """-> (passed, category)"""
    if entry is None:
        return False, "MISSING"
    b = entry.get("behavior")
    bc = entry.get("behaviorClose")
    if b == "OK" and bc == "OK":
        return True, "OK"
    if b == "INFORMATIONAL" and case_id in INFORMATIONAL_CASES and bc in ("INFORMATIONAL", "OK"):
        return True, "INFORMATIONAL"
    if b == "UNIMPLEMENTED" and section_of(case_id) in DEFLATE_SECTIONS:
        if allow_unimpl_deflate and bc == "OK":
            return True, "UNIMPLEMENTED"
        return False, "UNIMPLEMENTED"
    if b == "OK":  # behavior fine, closing handshake not
        return False, "CLOSE " + str(bc)
    return False, str(b)


def case_detail(report_dir, entry):
    """(path, per-case report dict or {}) for an index.json entry."""
    rf = entry.get("reportfile") if entry else None
    if not rf:
        return None, {}
    path = os.path.join(report_dir, rf)
    try:
        with open(path, encoding="utf-8") as f:
            return path, json.load(f)
    except (OSError, ValueError):
        return path, {}


class SideResult:
    def __init__(self, side, report_dir, index_path, agent, expected, cases, allow, extra_failures):
        self.side = side
        self.report_dir = report_dir
        self.index_path = index_path
        self.agent = agent
        self.expected = expected
        self.rows = []  # (case_id, passed, category, entry)
        self.errors = []
        self.extra_failures = list(extra_failures)
        self.unexpected = []
        self.run_info = {}
        self.spec = None

        ri = os.path.join(report_dir, "run-info.json")
        if os.path.isfile(ri):
            try:
                self.run_info = load_json(ri, "run-info.json")
            except InputError as e:
                self.errors.append(str(e))

        agent_results = {}
        if not os.path.isfile(index_path):
            self.errors.append("index.json not found: %s (wstest wrote no report: did the run start?)" % index_path)
        else:
            try:
                index = load_json(index_path, "index.json")
            except InputError as e:
                self.errors.append(str(e))
                index = {}
            if agent in index:
                agent_results = index[agent]
            else:
                self.errors.append("agent %r not in %s (agents found: %s)" % (
                    agent, index_path, ", ".join(sorted(index)) or "none"))
        for cid in expected:
            entry = agent_results.get(cid)
            ok, cat = judge(cid, entry, allow)
            self.rows.append((cid, ok, cat, entry))
        exp = set(expected)
        self.unexpected = sorted((c for c in agent_results if c not in exp), key=lambda c: id_tuple(c) if re.fullmatch(r"[\d.]+", c) else (999,))
        self.cases = cases

    @property
    def passed(self):
        return sum(1 for r in self.rows if r[1])

    @property
    def failed(self):
        # every expected case that did not pass, plus harness-level failures
        # (testee crashed, client exit code, ...); a report that could not be
        # read at all fails every expected case via MISSING.
        return sum(1 for r in self.rows if not r[1]) + len(self.extra_failures) + (
            1 if (self.errors and not self.rows) else 0)

    def counts(self):
        c = {}
        for _, _, cat, _ in self.rows:
            c[cat] = c.get(cat, 0) + 1
        return c


def print_side(res, out):
    for e in res.errors:
        print("ERROR %s: %s" % (res.side, e), file=out)
    for f in res.extra_failures:
        print("FAIL %s harness: %s" % (res.side, f), file=out)
    for cid, ok, cat, entry in res.rows:
        if ok:
            continue
        desc = res.cases.get(cid, {}).get("description", "")
        if entry is None:
            print("FAIL %s %s: missing from index.json (case never ran or never finished)" % (res.side, cid), file=out)
            print("    description: %s" % desc, file=out)
            continue
        path, d = case_detail(res.report_dir, entry)
        print("FAIL %s %s: behavior=%s behaviorClose=%s (%s)" % (
            res.side, cid, entry.get("behavior"), entry.get("behaviorClose"), cat), file=out)
        print("    description: %s" % desc, file=out)
        exp = res.cases.get(cid, {}).get("expectation")
        if exp:
            print("    expected: %s" % exp, file=out)
        if d.get("result"):
            print("    result: %s" % d["result"], file=out)
        if d.get("resultClose"):
            print("    resultClose: %s" % d["resultClose"], file=out)
        if d:
            print("    testee close: code=%s reason=%r; wstest close: code=%s; clean=%s, dropped by wstest=%s" % (
                d.get("remoteCloseCode"), d.get("remoteCloseReason"), d.get("localCloseCode"),
                d.get("wasClean"), d.get("droppedByMe")), file=out)
        print("    report: %s" % (path or "(none)"), file=out)
    if res.unexpected:
        print("NOTE %s: %d case(s) in index.json not in the expected set (not graded): %s" % (
            res.side, len(res.unexpected), " ".join(res.unexpected[:20]) + (" ..." if len(res.unexpected) > 20 else "")), file=out)
    c = res.counts()
    breakdown = ", ".join("%s %d" % (k, v) for k, v in sorted(c.items(), key=lambda kv: (kv[0] != "OK", kv[0])))
    print("%s breakdown (%d expected cases, agent %r, report %s): %s" % (
        res.side, len(res.expected), res.agent, res.index_path, breakdown or "none"), file=out)


# --------------------------------------------------------------------------
# markdown

BEGIN = "<!-- BEGIN autobahn-%s: generated by tests/autobahn/grade.py, do not edit -->"
END = "<!-- END autobahn-%s -->"
HEADER = """# Autobahn|Testsuite conformance

Generated by `tests/autobahn/grade.py` from the reports of the real
Autobahn|Testsuite (`wstest`); do not edit by hand. Grading is strict:
every case must be `OK` (behavior and behaviorClose); `INFORMATIONAL`
passes only for 7.1.6, 7.13.1, 7.13.2; `UNIMPLEMENTED` passes only for the
permessage-deflate sections 12/13 and only when the run allowed it;
`NON-STRICT`, `FAILED`, `WRONG CODE`, `UNCLEAN` and missing cases fail.
See `tests/autobahn/README.md`.
"""


def md_escape(s):
    return str(s).replace("|", "\\|").replace("\n", " ")


def render_side_md(res, grade_cmd, allow):
    ri = res.run_info
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    lines = [BEGIN % res.side, "## %s" % SIDE_TITLES[res.side], ""]
    lines.append("- Graded: %s" % now)
    if ri.get("finished"):
        lines.append("- Run finished: %s (wall time %ss)" % (ri.get("finished"), ri.get("elapsed_s", "?")))
    if ri.get("command"):
        lines.append("- Command: `%s`" % ri["command"])
    if grade_cmd != ri.get("command"):
        lines.append("- Grading command: `%s`" % grade_cmd)
    if ri.get("testee_cmd_template") or ri.get("testee_cmd"):
        lines.append("- Testee: `%s`" % (ri.get("testee_cmd_template") or ri["testee_cmd"]))
    if ri.get("wstest_version"):
        lines.append("- wstest: %s" % ri["wstest_version"])
    lines.append("- Agent: `%s`; deflate UNIMPLEMENTED allowed: %s" % (res.agent, "yes" if allow else "no"))
    lines.append("- **Result: %d passed, %d failed** (of %d expected cases)" % (res.passed, res.failed, len(res.expected)))
    for e in res.errors:
        lines.append("- Error: %s" % md_escape(e))
    for f in res.extra_failures:
        lines.append("- Harness failure: %s" % md_escape(f))
    lines += ["", "### Totals per section", "",
              "| Section | Cases | Passed | Failed | Outcomes |",
              "| --- | ---: | ---: | ---: | --- |"]
    by_sec = {}
    for cid, ok, cat, _ in res.rows:
        s = by_sec.setdefault(section_of(cid), {"n": 0, "p": 0, "cats": {}})
        s["n"] += 1
        s["p"] += 1 if ok else 0
        s["cats"][cat] = s["cats"].get(cat, 0) + 1
    for sec in sorted(by_sec):
        s = by_sec[sec]
        name = ""
        for cid in res.expected:
            if section_of(cid) == sec:
                name = res.cases.get(cid, {}).get("section", "")
                break
        cats = ", ".join("%s %d" % (k, v) for k, v in sorted(s["cats"].items(), key=lambda kv: (kv[0] != "OK", kv[0])))
        lines.append("| %s | %d | %d | %d | %s |" % (md_escape(name or sec), s["n"], s["p"], s["n"] - s["p"], cats))
    lines += ["", "### Cases", "",
              "| Case | Result | behavior | behaviorClose | Duration (ms) |",
              "| --- | --- | --- | --- | ---: |"]
    for cid, ok, cat, entry in res.rows:
        if entry is None:
            lines.append("| %s | FAIL | (missing) | (missing) | |" % cid)
        else:
            lines.append("| %s | %s | %s | %s | %s |" % (
                cid, "pass" if ok else "**FAIL**", md_escape(entry.get("behavior")),
                md_escape(entry.get("behaviorClose")), entry.get("duration", "")))
    lines += ["", END % res.side]
    return "\n".join(lines)


def update_markdown(path, rendered):
    """rendered: {side: text}. Replace those sides' sections, keep the rest."""
    existing = ""
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            existing = f.read()
    if not existing.strip():
        existing = HEADER
    sections = {}
    for side in SIDES:
        m = re.search(re.escape(BEGIN % side) + r".*?" + re.escape(END % side), existing, re.S)
        if m:
            sections[side] = m
    for side, text in rendered.items():
        if side in sections:
            m = sections[side]
            existing = existing[:m.start()] + text + existing[m.end():]
            # positions of the other section may have moved: recompute
            for s2 in SIDES:
                m2 = re.search(re.escape(BEGIN % s2) + r".*?" + re.escape(END % s2), existing, re.S)
                if m2:
                    sections[s2] = m2
        else:
            # keep server before client when both are new
            if side == "server" and "client" in sections:
                m = sections["client"]
                existing = existing[:m.start()] + text + "\n\n" + existing[m.start():]
            else:
                existing = existing.rstrip("\n") + "\n\n" + text + "\n"
            for s2 in SIDES:
                m2 = re.search(re.escape(BEGIN % s2) + r".*?" + re.escape(END % s2), existing, re.S)
                if m2:
                    sections[s2] = m2
    if not existing.endswith("\n"):
        existing += "\n"
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(existing)
    os.replace(tmp, path)


# --------------------------------------------------------------------------


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See the module docstring / README.md for the grading rules.")
    ap.add_argument("--server", metavar="DIR", help="server-side report dir (or its index.json)")
    ap.add_argument("--client", metavar="DIR", help="client-side report dir (or its index.json)")
    ap.add_argument("--report", metavar="DIR", help="report dir for the side given by --side")
    ap.add_argument("--side", choices=SIDES, help="side of --report (and of the markdown section)")
    ap.add_argument("--agent", default="duplex", help="agent name in index.json (default: duplex)")
    ap.add_argument("--tsv", default=None, help="autobahn_cases.tsv (default: <repo>/../shared/conformance/)")
    sel = ap.add_mutually_exclusive_group()
    sel.add_argument("--cases", help="comma-separated wstest case patterns, e.g. '1.*,2.*,7.1.6'")
    sel.add_argument("--sections", help="sections, e.g. 1-10 or 1,2,5")
    sel.add_argument("--all", action="store_true", help="all cases (sections 1-13)")
    ap.add_argument("--exclude", default="", help="comma-separated patterns to exclude")
    ap.add_argument("--allow-unimplemented-deflate", action="store_true",
                    help="let UNIMPLEMENTED pass in sections 12/13 (deflate not yet required)")
    ap.add_argument("--harness-failure", action="append", default=[], metavar="TEXT",
                    help="count a harness-level failure (e.g. testee crashed) for the single graded side")
    ap.add_argument("--markdown", metavar="FILE", help="write/update the graded sides' sections of FILE")
    ap.add_argument("--command", help="command to record as the grading command in the markdown")
    ap.add_argument("--resolve", metavar="PATTERNS",
                    help="only print the case ids that comma-separated PATTERNS select (minus --exclude), one per line")
    args = ap.parse_args(argv)

    try:
        cases = load_cases(args.tsv or default_tsv())
        all_ids = list(cases)
        excl = [p for p in args.exclude.split(",") if p.strip()]

        if args.resolve is not None:
            for cid in resolve_cases(args.resolve.split(","), excl, all_ids):
                print(cid)
            return 0

        sides = {}
        if args.report:
            if not args.side:
                raise InputError("--report needs --side server|client")
            sides[args.side] = args.report
        if args.server:
            sides["server"] = args.server
        if args.client:
            sides["client"] = args.client
        if not sides:
            raise InputError("nothing to grade: give --server DIR and/or --client DIR (or --report DIR --side S)")
        if args.harness_failure and len(sides) != 1:
            raise InputError("--harness-failure needs exactly one graded side")

        results = []
        for side in SIDES:
            if side not in sides:
                continue
            report_dir, index_path = report_paths(sides[side])
            if args.cases:
                expected = resolve_cases(args.cases.split(","), excl, all_ids)
            elif args.sections:
                expected = resolve_cases(section_patterns(parse_sections(args.sections)), excl, all_ids)
            elif args.all:
                expected = resolve_cases(["*"], excl, all_ids)
            else:
                spec_path = os.path.join(report_dir, "spec.json")
                if os.path.isfile(spec_path):
                    spec = load_json(spec_path, "spec.json")
                    expected = resolve_cases(spec.get("cases", []), list(spec.get("exclude-cases", [])) + excl, all_ids)
                else:
                    expected = resolve_cases(section_patterns(DEFAULT_SECTIONS), excl, all_ids)
            if not expected:
                raise InputError("the case selection for %s is empty" % side)
            results.append(SideResult(side, report_dir, index_path, args.agent, expected, cases,
                                      args.allow_unimplemented_deflate, args.harness_failure))
    except InputError as e:
        print("grade.py: error: %s" % e, file=sys.stderr)
        return 2

    out = sys.stdout
    for res in results:
        print_side(res, out)
    for res in results:
        print("%s: %d passed, %d failed" % (res.side, res.passed, res.failed), file=out)
    total_p = sum(r.passed for r in results)
    total_f = sum(r.failed for r in results)
    if len(results) > 1:
        print("autobahn: %d passed, %d failed" % (total_p, total_f), file=out)

    if args.markdown:
        me = os.path.abspath(__file__)
        me = os.path.relpath(me, REPO) if me.startswith(REPO + os.sep) else me
        grade_cmd = args.command or " ".join(shlex.quote(a) for a in ["python3", me] + sys.argv[1:])
        update_markdown(args.markdown, {r.side: render_side_md(r, grade_cmd, args.allow_unimplemented_deflate) for r in results})
        print("grade.py: wrote %s (%s)" % (args.markdown, ", ".join(r.side for r in results)), file=sys.stderr)

    ok = total_f == 0 and all(not r.errors for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
