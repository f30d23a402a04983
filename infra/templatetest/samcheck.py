#!/usr/bin/env python3
"""samcheck: template.yaml through the SAM translator and cfn-lint.

The Go tests in this directory check the template against goformation and
the CloudFormation resource specification; this script adds the two tools
AWS itself maintains (both installed with Python, not fetched here):

  1. cfn-lint on template.yaml for each parameter set below. cfn-lint runs
     the SAM transform itself and, given --parameters, evaluates the
     conditions for those values.
  2. The SAM translator (samtranslator, the library behind `sam build` and
     CloudFormation's AWS::Serverless transform) on template.yaml for each
     parameter set, as `sam package` would hand it over (CodeUri an S3
     object), then cfn-lint on each translated CloudFormation template, and
     checks of what the translation must contain (the SQS event source of
     the worker, the schedule's payload per mode).

Usage: samcheck.py [--keep DIR] [TEMPLATE]. Exits 0 when everything passed,
1 on a finding (errors and warnings of cfn-lint both count), 2 when a tool
is missing. Both are used as libraries (cfnlint.api, samtranslator), in
this one process. TestSAMTranslatorAndCfnLint (samcheck_test.go) runs it; so does
`make template-check`.
"""

import argparse
import copy
import json
import os
import shutil
import sys
import tempfile

# Parameter sets, each linted and translated: the Go tests' own
# (paramsets.json), so that both check the template under the same values.
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "paramsets.json")) as _f:
    PARAMETER_SETS = json.load(_f)["sets"]

PSEUDO = {
    "AWS::Region": "eu-west-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "popconn-samcheck",
    "AWS::StackId": "arn:aws:cloudformation:eu-west-1:123456789012:stack/popconn-samcheck/00000000-0000-0000-0000-000000000000",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NotificationARNs": [],
}

# What `sam package` puts where CodeUri names the local build directory.
PACKAGED_CODE = "s3://popconn-samcheck-artifacts/poller.zip"


class Finding(Exception):
    pass


def typed(tmpl, params):
    """params as CloudFormation hands them to the template: lists split."""
    out = {}
    for k, v in params.items():
        typ = tmpl.get("Parameters", {}).get(k, {}).get("Type", "String")
        out[k] = v.split(",") if typ == "CommaDelimitedList" or typ.startswith("List<") else v
    return out


def cfn_lint(text, tmpl, params, label, ignore=()):
    """cfn-lint's findings of warning level and above on the template text."""
    from cfnlint.api import ManualArgs, lint
    from cfnlint.context.parameters import ParameterSet

    config = ManualArgs(
        regions=[PSEUDO["AWS::Region"]],
        parameters=[ParameterSet(parameters=typed(tmpl, params))] if params else [],
        ignore_checks=list(ignore),
    )
    found = [m for m in lint(text, config=config) if m.rule.id[0] in "EW"]
    return "\n".join("%s:%d: %s %s" % (label, m.linenumber, m.rule.id, m.message) for m in found)


def load(path):
    # cfn-lint's decoder reads the short forms (!Ref, !Sub ...) into the
    # long ones, as CloudFormation does.
    from cfnlint.decode import decode

    tmpl, matches = decode(path)
    if matches:
        raise Finding("%s does not parse: %s" % (path, "; ".join(str(m) for m in matches)))
    return json.loads(json.dumps(tmpl))  # plain dicts and lists


def packaged(tmpl):
    """The template as `sam package` hands it to the transform."""
    t = copy.deepcopy(tmpl)
    fn_globals = t.get("Globals", {}).get("Function", {})
    if "CodeUri" in fn_globals:
        fn_globals["CodeUri"] = PACKAGED_CODE
    for res in t["Resources"].values():
        if res.get("Type") == "AWS::Serverless::Function" and "CodeUri" in res.get("Properties", {}):
            res["Properties"]["CodeUri"] = PACKAGED_CODE
    return t


def translate(tmpl, params):
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    # The translator takes the region for the ARNs it builds from the
    # environment, as a boto3 session would.
    os.environ.setdefault("AWS_DEFAULT_REGION", PSEUDO["AWS::Region"])
    values = dict(PSEUDO)
    values.update(params)
    # The explicit roles leave SAM no managed policy to look up.
    return Translator(managed_policy_map={}, sam_parser=Parser()).translate(
        sam_template=packaged(tmpl), parameter_values=values, get_managed_policy_map=lambda: {}
    )


def resources_of(out, typ):
    return {k: v for k, v in out["Resources"].items() if v.get("Type") == typ}


def check_translation(name, out):
    """What the deployment depends on, in the translated template."""
    left = [k for k, v in out["Resources"].items() if v.get("Type", "").startswith("AWS::Serverless::")]
    if left:
        raise Finding("%s: not translated: %s" % (name, left))
    if "Globals" in out:
        raise Finding("%s: Globals left in the translated template" % name)
    fns = resources_of(out, "AWS::Lambda::Function")
    if set(fns) != {"PollerFunction", "WorkerFunction"}:
        raise Finding("%s: Lambda functions %s, want PollerFunction and WorkerFunction" % (name, sorted(fns)))
    if fns["WorkerFunction"].get("Condition") != "FanOut" or "Condition" in fns["PollerFunction"]:
        raise Finding("%s: conditions %s" % (name, {k: v.get("Condition") for k, v in fns.items()}))
    shared = ["Handler", "Runtime", "Architectures", "MemorySize", "EphemeralStorage", "Timeout", "TracingConfig", "VpcConfig", "Code"]
    for key in shared:
        if fns["PollerFunction"]["Properties"].get(key) != fns["WorkerFunction"]["Properties"].get(key):
            raise Finding("%s: the functions differ in %s" % (name, key))
    penv = fns["PollerFunction"]["Properties"]["Environment"]["Variables"]
    wenv = fns["WorkerFunction"]["Properties"]["Environment"]["Variables"]
    if set(penv) - set(wenv) != {"POPCONN_JOB_QUEUE_URL"} or set(wenv) - set(penv):
        raise Finding("%s: environments differ beyond POPCONN_JOB_QUEUE_URL: %s / %s" % (name, sorted(penv), sorted(wenv)))
    for k in wenv:
        if wenv[k] != penv[k]:
            raise Finding("%s: %s differs between the functions" % (name, k))

    esms = resources_of(out, "AWS::Lambda::EventSourceMapping")
    if len(esms) != 1:
        raise Finding("%s: %d event source mappings, want the worker's one" % (name, len(esms)))
    (esm_id, esm), = esms.items()
    p = esm["Properties"]
    want = {
        "EventSourceArn": {"Fn::GetAtt": ["JobQueue", "Arn"]},
        "FunctionName": {"Ref": "WorkerFunction"},
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "ScalingConfig": {"MaximumConcurrency": {"Ref": "WorkerMaxConcurrency"}},
        "BatchSize": {"Ref": "WorkerBatchSize"},
    }
    for k, v in want.items():
        if p.get(k) != v:
            raise Finding("%s: %s.%s = %s, want %s" % (name, esm_id, k, json.dumps(p.get(k)), json.dumps(v)))
    if esm.get("Condition") != "FanOut":
        raise Finding("%s: %s has condition %r, want FanOut" % (name, esm_id, esm.get("Condition")))

    rules = resources_of(out, "AWS::Events::Rule")
    if len(rules) != 1:
        raise Finding("%s: %d EventBridge rules, want the schedule" % (name, len(rules)))
    (rule_id, rule), = rules.items()
    targets = rule["Properties"]["Targets"]
    if len(targets) != 1 or targets[0].get("Input") != {"Fn::If": ["FanOut", {"Ref": "AWS::NoValue"}, "{}"]}:
        raise Finding("%s: %s targets %s, want Input {} in single mode and none in fanout mode" % (name, rule_id, json.dumps(targets)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("template", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "..", "template.yaml"))
    ap.add_argument("--keep", help="write the translated templates into this directory")
    args = ap.parse_args()

    for module, package in (("cfnlint", "cfn-lint"), ("samtranslator", "aws-sam-translator")):
        try:
            __import__(module)
        except ImportError:
            print("samcheck: %s is not installed for %s (pip install %s)" % (package, sys.executable, package), file=sys.stderr)
            return 2

    findings = []
    tmpl = load(args.template)
    with open(args.template) as f:
        text = f.read()
    outdir = args.keep or tempfile.mkdtemp(prefix="samcheck-")
    os.makedirs(outdir, exist_ok=True)
    try:
        for name, params in PARAMETER_SETS.items():
            found = cfn_lint(text, tmpl, params, os.path.basename(args.template))
            if found:
                findings.append("cfn-lint of template.yaml (%s):\n%s" % (name, found))
            try:
                out = translate(tmpl, params)
                check_translation(name, out)
            except Finding as e:
                findings.append(str(e))
                continue
            except Exception as e:  # the translator's own InvalidDocumentException and the like
                findings.append("SAM translator (%s): %s" % (name, e))
                continue
            translated = json.dumps(out, indent=1, sort_keys=True)
            with open(os.path.join(outdir, "translated-%s.json" % name), "w") as f:
                f.write(translated)
            # W2001, parameter not used: SAM writes the values of some
            # parameters (EventInvokeConfig's) into what it generates.
            found = cfn_lint(translated, out, params, "translated-%s.json" % name, ignore=["W2001"])
            if found:
                findings.append("cfn-lint of the translated template (%s; see it with --keep DIR):\n%s" % (name, found))
            print("samcheck: %s: translated (%d resources) and linted" % (name, len(out["Resources"])))
    finally:
        if not args.keep:
            shutil.rmtree(outdir, ignore_errors=True)
    for f in findings:
        print(f, file=sys.stderr)
    if findings:
        print("samcheck: %d finding(s)" % len(findings), file=sys.stderr)
        return 1
    print("samcheck: cfn-lint and the SAM translator passed for %s" % ", ".join(PARAMETER_SETS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
