// Package templatetest checks template.yaml, the AWS SAM template that
// deploys popconn on AWS, and infra/dashboard.json, without an AWS account.
// It holds tests only; `make template-check` runs them.
//
// What the tests verify:
//   - The template parses with goformation (github.com/awslabs/goformation/v7)
//     after its intrinsic functions are resolved for two parameter sets: the
//     defaults, and one with every optional feature on (VPC, gateway
//     endpoints, KMS key, Object Lock, expiry, secrets, S3 configuration,
//     alarm email). Each resource is decoded into goformation's typed
//     structs, which reject unknown properties.
//   - Every CloudFormation resource, and the properties SAM passes to
//     AWS::Lambda::Function unchanged, against the CloudFormation resource
//     specification from @aws-cdk/aws-service-spec: no unknown property, no
//     required property missing (nested types too), enumerated values
//     allowed, scalar types right, every Fn::GetAtt attribute defined.
//   - Every Ref, Fn::Sub variable, Fn::GetAtt target and condition exists;
//     every parameter and condition is used; parameter defaults satisfy
//     their own constraints.
//   - Every resource has a comment directly above its logical ID; every IAM
//     action has a comment on its line.
//   - IAM: no wildcard action, no "*" or literal resource in an Allow, the
//     exact set of actions the poller needs, each scoped to this stack's
//     resources or the parameters naming them, optional ones only under
//     their condition.
//   - The dashboard: the template's DashboardBody is infra/dashboard.json
//     verbatim; widgets fit the 24-column grid without overlapping; every
//     metric in the poller's namespace is one internal/metrics emits, with
//     the dimensions it emits it with; AWS metrics exist in the
//     specification with the dimensions used.
//   - The alarms the deployment needs exist and reference emitted metrics
//     with their real dimensions, periods CloudWatch accepts, and actions
//     that reach the SNS topic.
//   - The schedule's Input is an event internal/lambdafn accepts as a
//     scheduled poll.
//
// What it cannot verify without an AWS account and the SAM CLI: that the
// SAM transform accepts the template (goformation's SAM specification is
// older than SAM: LoggingConfig is checked against AWS::Lambda::Function
// instead, see samNewerProperties), that CloudFormation creates the stack
// (service quotas, Object Lock on an existing bucket, email confirmation),
// that the IAM policy is sufficient at run time, that CloudWatch Logs
// extracts the EMF lines, that the dashboard renders, and that the alarms
// fire. The resource specification is a snapshot (pinned npm version), not
// the live CloudFormation registry.
package templatetest
