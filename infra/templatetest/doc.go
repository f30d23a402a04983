// Package templatetest checks template.yaml, the AWS SAM template that
// deploys popconn on AWS, and infra/dashboard.json, without an AWS account.
// It holds tests (and samcheck.py, which one of them runs); `make
// template-check` runs them.
//
// What the tests verify:
//   - The template parses with goformation (github.com/awslabs/goformation/v7)
//     after its intrinsic functions are resolved and its Globals merged
//     into the functions, for three parameter sets (paramsets.json): the
//     defaults (single mode), fanout mode, and fanout with every optional
//     feature on (VPC, gateway endpoints, KMS key, Object Lock, expiry,
//     secrets, S3 configuration elsewhere, alarm email, a reservation,
//     X-Ray, per-mailbox metrics). Each resource is decoded into
//     goformation's typed structs, which reject unknown properties.
//   - Both functions: same code, runtime, sizes, VPC, tracing and
//     environment; the poller alone has POPCONN_JOB_QUEUE_URL, and only in
//     fanout mode; no reservation unless ReservedConcurrency asks; the
//     worker's SQS event source (partial batch responses, capped
//     concurrency); the schedule's payload per mode, decoded by
//     internal/lambdafn; the job queues (FIFO, visibility timeout at least
//     six of the largest FunctionTimeout, redrive after three receives,
//     retention beyond the last retry).
//   - Every CloudFormation resource, and the properties SAM passes to
//     AWS::Lambda::Function unchanged, against the CloudFormation resource
//     specification from @aws-cdk/aws-service-spec: no unknown property, no
//     required property missing (nested types too), enumerated values
//     allowed, scalar types right, every Fn::GetAtt attribute defined.
//   - Every Ref, Fn::Sub variable, Fn::GetAtt target and condition exists;
//     every parameter and condition is used; parameter defaults satisfy
//     their own constraints; each condition's value per parameter set.
//   - Every resource has a comment directly above its logical ID; every IAM
//     action has a comment on its line.
//   - IAM: no wildcard action, no "*" or literal resource in an Allow (but
//     X-Ray's, which take no other), the exact set of actions each role and
//     the shared MailboxAccessPolicy grant, each scoped to this stack's
//     resources or the parameters naming them, optional ones only under
//     their condition, and the Condition blocks (s3:prefix on ListBucket,
//     kms:ViaService on the key); the configuration source each parameter
//     set names is readable.
//   - The dashboard, in both modes: the template's DashboardBody is
//     infra/dashboard.json verbatim; widgets fit the 24-column grid without
//     overlapping; every metric in the poller's namespace is one
//     internal/metrics emits by default, without dimensions; AWS metrics
//     exist in the specification with the dimensions used; the Logs
//     Insights tables read only fields metrics.PollEMF writes, from both
//     functions' log groups; every alarm is on the alarm widget, or (fanout
//     only) its metric on a widget.
//   - The alarms the deployment needs exist and reference emitted metrics
//     with their real dimensions (or the template's Contributor Insights
//     rules), periods CloudWatch accepts, and actions that reach the SNS
//     topic. The Contributor Insights rules are valid JSON, read the log
//     groups of the mode, count per mailbox and filter on outcomes
//     internal/metrics defines, busy excluded.
//   - samcheck.py (TestSAMTranslatorAndCfnLint): cfn-lint on template.yaml
//     and the SAM translator (samtranslator) on it for each parameter set,
//     then cfn-lint on each translated CloudFormation template, and what
//     the translation must contain (the worker's event source mapping, the
//     schedule's Input per mode, identical function settings).
//
// What it cannot verify without an AWS account: that CloudFormation
// creates the stack (service quotas, Object Lock on an existing bucket,
// email confirmation), that the IAM policy is sufficient at run time (in
// particular whether S3 answers 404 for a missing key under the
// IfExists s3:prefix condition, which the comment on that statement
// reasons out), that CloudWatch Logs extracts the EMF lines, that the
// Contributor Insights rules match the handler's log lines and the alarm
// on them evaluates as described, that the dashboard renders, and that the
// alarms fire. The resource specification and the tools are snapshots
// (pinned npm version, the installed cfn-lint and aws-sam-translator), not
// the live CloudFormation registry.
package templatetest
