package templatetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation/lambda"
	"github.com/awslabs/goformation/v7/cloudformation/serverless"
	"github.com/awslabs/goformation/v7/cloudformation/sqs"
	"github.com/awslabs/goformation/v7/intrinsics"

	"github.com/popconnector/popconnector/internal/lambdafn"
)

// TestTemplateParses resolves the template for each parameter set and
// checks what the deployment depends on in goformation's typed resources.
func TestTemplateParses(t *testing.T) {
	tp := load(t)
	for _, ps := range paramSets {
		t.Run(ps.name, func(t *testing.T) {
			r := tp.resolve(t, ps.values)
			all := ps.name == "everything"
			checkFunctions(t, r)
			checkSchedule(t, r)
			checkQueues(t, r, tp)
			checkBucket(t, r, all)
			checkTable(t, r)
			checkOptionalResources(t, r, all)
		})
	}
}

// checkFunctions: the poller and the worker run the same code with the
// same settings and environment, apart from what their roles differ in.
func checkFunctions(t *testing.T, r *resolved) {
	t.Helper()
	fanOut := r.vals["Mode"] == "fanout"
	if r.conds["FanOut"] != fanOut {
		t.Errorf("condition FanOut = %v with Mode %v", r.conds["FanOut"], r.vals["Mode"])
	}
	for _, id := range []string{"PollerFunction", "WorkerFunction"} {
		t.Run(id, func(t *testing.T) {
			fn, err := r.cf.GetServerlessFunctionWithName(id)
			if err != nil {
				t.Fatal(err)
			}
			worker := id == "WorkerFunction"
			if want := map[bool]string{true: "FanOut"}[worker]; fn.AWSCloudFormationCondition != want {
				t.Errorf("Condition = %q, want %q", fn.AWSCloudFormationCondition, want)
			}
			checkFunctionBasics(t, r, fn)
			role, logGroup := "PollerRole", "PollerLogGroup"
			if worker {
				role, logGroup = "WorkerRole", "WorkerLogGroup"
			}
			if got := deref(fn.Role); got != getAttPlaceholder(role, "Arn") {
				t.Errorf("Role = %q, want the %s", got, role)
			}
			checkLogging(t, r, id, logGroup)

			// Environment: exactly these variables, none of them a secret.
			config := scalarString(r.vals["ConfigSource"])
			if config == "" {
				config = "s3://" + refPlaceholder("ArchiveBucket") + "/config/popconn.yaml"
			}
			want := map[string]string{
				"POPCONN_CONFIG":                  config,
				"POPCONN_ARCHIVE_BUCKET":          refPlaceholder("ArchiveBucket"),
				"POPCONN_ARCHIVE_PREFIX":          scalarString(r.vals["ArchivePrefix"]),
				"POPCONN_LEDGER_TABLE":            refPlaceholder("LedgerTable"),
				"POPCONN_LEDGER_RECORD_RETENTION": scalarString(r.vals["LedgerRecordRetentionHours"]) + "h",
				"POPCONN_METRICS_NAMESPACE":       scalarString(r.vals["MetricsNamespace"]),
				"POPCONN_PER_MAILBOX_METRICS":     scalarString(r.vals["PerMailboxMetrics"]),
			}
			if fanOut && !worker {
				want["POPCONN_JOB_QUEUE_URL"] = refPlaceholder("JobQueue")
			}
			if fn.Environment == nil {
				t.Fatal("no Environment")
			}
			vars := map[string]string{}
			for k, v := range fn.Environment.Variables {
				if v != "" { // AWS::NoValue (null, decoded as ""): CloudFormation drops the variable
					vars[k] = v
				}
			}
			for k, v := range vars {
				w, ok := want[k]
				if !ok {
					t.Errorf("unexpected environment variable %s", k)
					continue
				}
				if v != w {
					t.Errorf("%s = %v, want %s", k, v, w)
				}
			}
			for k := range want {
				if _, ok := vars[k]; !ok {
					t.Errorf("environment variable %s missing", k)
				}
			}

			if worker {
				checkWorkerEvents(t, r, fn)
				if fn.EventInvokeConfig != nil {
					t.Error("the worker has an EventInvokeConfig; it is invoked by its SQS event source, never asynchronously")
				}
				if fn.ReservedConcurrentExecutions != nil {
					t.Error("the worker reserves concurrency; ScalingConfig.MaximumConcurrency caps it without a reservation")
				}
				return
			}
			reserved := r.vals["ReservedConcurrency"].(float64)
			switch {
			case reserved == -1 && fn.ReservedConcurrentExecutions != nil:
				t.Errorf("ReservedConcurrentExecutions = %d with ReservedConcurrency -1, want none (new accounts cannot reserve any)", *fn.ReservedConcurrentExecutions)
			case reserved != -1 && (fn.ReservedConcurrentExecutions == nil || float64(*fn.ReservedConcurrentExecutions) != reserved):
				t.Errorf("ReservedConcurrentExecutions = %v, want %v", fn.ReservedConcurrentExecutions, reserved)
			}
			// Asynchronous invocation: no Lambda retry, failures to the DLQ.
			eic := fn.EventInvokeConfig
			if eic == nil {
				t.Fatal("no EventInvokeConfig")
			}
			if eic.MaximumRetryAttempts == nil || *eic.MaximumRetryAttempts != 0 {
				t.Errorf("MaximumRetryAttempts = %v, want 0", eic.MaximumRetryAttempts)
			}
			if got := derefInt(eic.MaximumEventAgeInSeconds); got < 60 || got > 21600 {
				t.Errorf("MaximumEventAgeInSeconds = %d, outside Lambda's 60..21600", got)
			}
			if eic.DestinationConfig == nil || eic.DestinationConfig.OnFailure == nil ||
				deref(eic.DestinationConfig.OnFailure.Type) != "SQS" ||
				eic.DestinationConfig.OnFailure.Destination != getAttPlaceholder("DeadLetterQueue", "Arn") {
				t.Errorf("OnFailure = %+v, want SQS to DeadLetterQueue.Arn", eic.DestinationConfig)
			}
		})
	}
}

// checkFunctionBasics: what both functions take from Globals.
func checkFunctionBasics(t *testing.T, r *resolved, fn *serverless.Function) {
	t.Helper()
	if got := deref(fn.Runtime); got != "provided.al2023" {
		t.Errorf("Runtime = %q, want provided.al2023", got)
	}
	if got := deref(fn.Handler); got != "bootstrap" {
		t.Errorf("Handler = %q, want bootstrap", got)
	}
	if len(fn.Architectures) != 1 || fn.Architectures[0] != "arm64" {
		t.Errorf("Architectures = %v, want [arm64]", fn.Architectures)
	}
	if fn.CodeUri == nil || fn.CodeUri.String == nil || strings.TrimSuffix(*fn.CodeUri.String, "/") != "bin/lambda/poller" {
		t.Errorf("CodeUri = %+v, want bin/lambda/poller (the directory make lambda builds)", fn.CodeUri)
	}
	if fn.AWSCloudFormationMetadata["BuildMethod"] != "makefile" {
		t.Errorf("Metadata.BuildMethod = %v, want makefile (sam build takes the prebuilt bootstrap)", fn.AWSCloudFormationMetadata["BuildMethod"])
	}
	if got := derefInt(fn.MemorySize); float64(got) != r.vals["FunctionMemorySize"] {
		t.Errorf("MemorySize = %d, want the FunctionMemorySize parameter", got)
	}
	if got := derefInt(fn.Timeout); float64(got) != r.vals["FunctionTimeout"] {
		t.Errorf("Timeout = %d, want the FunctionTimeout parameter", got)
	}
	if got := deref(fn.Tracing); got != r.vals["Tracing"] {
		t.Errorf("Tracing = %q, want the Tracing parameter %v", got, r.vals["Tracing"])
	}
	if fn.Policies != nil {
		t.Error("Policies set: with an explicit Role SAM ignores them; put permissions in the role")
	}
	if r.conds["InVpc"] {
		if fn.VpcConfig == nil || len(fn.VpcConfig.SubnetIds) != 2 || len(fn.VpcConfig.SecurityGroupIds) != 1 {
			t.Errorf("VpcConfig = %+v, want the SubnetIds and SecurityGroupIds parameters", fn.VpcConfig)
		}
	} else if fn.VpcConfig != nil {
		t.Errorf("VpcConfig = %+v without SubnetIds", fn.VpcConfig)
	}
}

// checkLogging: LoggingConfig, taken out for goformation's stale SAM
// types, decoded strictly as the AWS::Lambda::Function type SAM passes it to.
func checkLogging(t *testing.T, r *resolved, id, logGroup string) {
	t.Helper()
	lc, ok := r.newer[id]["LoggingConfig"]
	if !ok {
		t.Fatalf("%s has no LoggingConfig", id)
	}
	var cfg lambda.Function_LoggingConfig
	if err := strictDecode(lc, &cfg); err != nil {
		t.Errorf("LoggingConfig is not a valid AWS::Lambda::Function LoggingConfig: %v", err)
	}
	if deref(cfg.LogFormat) != "Text" {
		t.Errorf("LogFormat = %q, want Text (each stdout line one event, as EMF needs)", deref(cfg.LogFormat))
	}
	if deref(cfg.LogGroup) != refPlaceholder(logGroup) {
		t.Errorf("LogGroup = %q, want the %s", deref(cfg.LogGroup), logGroup)
	}
}

// checkWorkerEvents: one SQS event source on the job queue, partial batch
// responses, capped concurrency.
func checkWorkerEvents(t *testing.T, r *resolved, fn *serverless.Function) {
	t.Helper()
	if len(fn.Events) != 1 {
		t.Fatalf("%d events, want the job queue's", len(fn.Events))
	}
	for name, ev := range fn.Events {
		if ev.Type != "SQS" || ev.Properties == nil || ev.Properties.SQSEvent == nil {
			t.Fatalf("event %s: type %q, want a valid SAM SQS event", name, ev.Type)
		}
		sq := ev.Properties.SQSEvent
		if sq.Queue != getAttPlaceholder("JobQueue", "Arn") {
			t.Errorf("event %s: Queue %q, want JobQueue.Arn", name, sq.Queue)
		}
		if got := derefInt(sq.BatchSize); float64(got) != r.vals["WorkerBatchSize"] || got < 1 || got > 10 {
			t.Errorf("event %s: BatchSize %d, want WorkerBatchSize (1..10 for a FIFO queue)", name, got)
		}
		// Taken out for goformation's stale SQS event type: decode them
		// strictly as the AWS::Lambda::EventSourceMapping types SAM passes
		// them to.
		var frt []string
		if err := strictDecode(r.newer["WorkerFunction"]["Events."+name+".FunctionResponseTypes"], &frt); err != nil || !slices.Equal(frt, []string{"ReportBatchItemFailures"}) {
			t.Errorf("event %s: FunctionResponseTypes %v (%v), want [ReportBatchItemFailures]", name, frt, err)
		}
		var sc lambda.EventSourceMapping_ScalingConfig
		if err := strictDecode(r.newer["WorkerFunction"]["Events."+name+".ScalingConfig"], &sc); err != nil {
			t.Errorf("event %s: ScalingConfig is not an AWS::Lambda::EventSourceMapping ScalingConfig: %v", name, err)
		}
		if got := derefInt(sc.MaximumConcurrency); float64(got) != r.vals["WorkerMaxConcurrency"] || got < 2 {
			t.Errorf("event %s: MaximumConcurrency %d, want WorkerMaxConcurrency (at least 2)", name, got)
		}
	}
}

// checkSchedule: one EventBridge schedule on the poller, whose payload
// the handler reads as a scheduled poll; in fanout mode the Scheduled
// Event itself, whose time the jobs carry as their tick.
func checkSchedule(t *testing.T, r *resolved) {
	t.Helper()
	fn, err := r.cf.GetServerlessFunctionWithName("PollerFunction")
	if err != nil {
		t.Fatal(err)
	}
	if len(fn.Events) != 1 {
		t.Errorf("%d events, want the one schedule", len(fn.Events))
	}
	for name, ev := range fn.Events {
		if ev.Type != "Schedule" {
			t.Errorf("event %s: Type %q, want Schedule", name, ev.Type)
			continue
		}
		if ev.Properties == nil || ev.Properties.ScheduleEvent == nil {
			t.Errorf("event %s: properties are not a valid SAM Schedule event (unknown property?)", name)
			continue
		}
		se := ev.Properties.ScheduleEvent
		if se.Schedule != r.vals["ScheduleExpression"] {
			t.Errorf("event %s: Schedule %q, want the ScheduleExpression parameter", name, se.Schedule)
		}
		if se.Enabled != nil && !*se.Enabled {
			t.Errorf("event %s is disabled", name)
		}
		input := scheduledEvent
		if !r.conds["FanOut"] {
			if se.Input == nil {
				t.Fatalf("event %s: no Input in single mode, want {}", name)
			}
			input = *se.Input
		} else if se.Input != nil {
			t.Errorf("event %s: Input %q in fanout mode; the dispatcher needs the Scheduled Event's time", name, *se.Input)
		}
		var got lambdafn.Event
		if err := json.Unmarshal([]byte(input), &got); err != nil {
			t.Errorf("event %s: payload %q is rejected by the handler: %v", name, input, err)
		} else if got.Trigger != lambdafn.TriggerSchedule {
			t.Errorf("event %s: payload %q decodes as trigger %q, want %q", name, input, got.Trigger, lambdafn.TriggerSchedule)
		} else if r.conds["FanOut"] && (got.Schedule == nil || got.Schedule.Time.IsZero()) {
			t.Errorf("event %s: the Scheduled Event's time is lost: %+v", name, got.Schedule)
		}
	}
}

// scheduledEvent is what EventBridge sends a rule's target without Input
// (the example of the EventBridge documentation).
const scheduledEvent = `{"version":"0","id":"53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa","detail-type":"Scheduled Event",
"source":"aws.events","account":"123456789012","time":"2026-03-04T05:05:00Z","region":"eu-west-1",
"resources":["arn:aws:events:eu-west-1:123456789012:rule/popconn-PollSchedule"],"detail":{}}`

// checkQueues: the fan-out job queue and its dead-letter queue.
func checkQueues(t *testing.T, r *resolved, tp *tmpl) {
	t.Helper()
	jq, err := r.cf.GetSQSQueueWithName("JobQueue")
	if err != nil {
		t.Fatal(err)
	}
	dlq, err := r.cf.GetSQSQueueWithName("JobDeadLetterQueue")
	if err != nil {
		t.Fatal(err)
	}
	for id, q := range map[string]*sqs.Queue{"JobQueue": jq, "JobDeadLetterQueue": dlq} {
		if q.AWSCloudFormationCondition != "FanOut" {
			t.Errorf("%s: Condition %q, want FanOut", id, q.AWSCloudFormationCondition)
		}
		if !derefBool(q.FifoQueue) {
			t.Errorf("%s is not FIFO (one message group per mailbox; a FIFO queue's dead-letter queue must be FIFO)", id)
		}
		if q.QueueName != nil {
			t.Errorf("%s: QueueName %q; let CloudFormation generate it (with the .fifo suffix)", id, *q.QueueName)
		}
		if !derefBool(q.SqsManagedSseEnabled) {
			t.Errorf("%s: no SSE-SQS", id)
		}
	}
	if derefBool(jq.ContentBasedDeduplication) {
		t.Error("JobQueue: content-based deduplication would merge the jobs of two ticks with equal bodies; the dispatcher sets the deduplication id")
	}
	// Lambda asks an SQS source for a visibility timeout of at least six
	// function timeouts; the largest FunctionTimeout the parameter allows
	// bounds them all.
	maxTimeout := tp.section("Parameters")["FunctionTimeout"].(map[string]any)["MaxValue"].(float64)
	vis := derefInt(jq.VisibilityTimeout)
	if float64(vis) < 6*maxTimeout || vis > 43200 {
		t.Errorf("JobQueue: VisibilityTimeout %d, want at least 6 x %v (the largest FunctionTimeout) and at most 43200", vis, maxTimeout)
	}
	rp, _ := jq.RedrivePolicy.(map[string]any)
	receives, _ := rp["maxReceiveCount"].(float64)
	if rp["deadLetterTargetArn"] != getAttPlaceholder("JobDeadLetterQueue", "Arn") || receives != 3 {
		t.Errorf("JobQueue: RedrivePolicy %v, want JobDeadLetterQueue after 3 receives", rp)
	}
	if ret := derefInt(jq.MessageRetentionPeriod); float64(ret) <= receives*float64(vis) {
		t.Errorf("JobQueue: retention %d s would drop a job before its %v receives of %d s", ret, receives, vis)
	}
	if derefInt(dlq.MessageRetentionPeriod) != 1209600 {
		t.Errorf("JobDeadLetterQueue: retention %d, want the 14-day maximum", derefInt(dlq.MessageRetentionPeriod))
	}
}

func checkBucket(t *testing.T, r *resolved, all bool) {
	t.Helper()
	b, err := r.cf.GetS3BucketWithName("ArchiveBucket")
	if err != nil {
		t.Fatal(err)
	}
	if b.AWSCloudFormationDeletionPolicy != "Retain" {
		t.Errorf("ArchiveBucket DeletionPolicy = %q, want Retain", b.AWSCloudFormationDeletionPolicy)
	}
	pab := b.PublicAccessBlockConfiguration
	if pab == nil || !derefBool(pab.BlockPublicAcls) || !derefBool(pab.BlockPublicPolicy) ||
		!derefBool(pab.IgnorePublicAcls) || !derefBool(pab.RestrictPublicBuckets) {
		t.Errorf("PublicAccessBlockConfiguration = %+v, want all four true", pab)
	}
	if b.BucketEncryption == nil || len(b.BucketEncryption.ServerSideEncryptionConfiguration) == 0 ||
		b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault == nil {
		t.Fatal("no default encryption")
	}
	sse := b.BucketEncryption.ServerSideEncryptionConfiguration[0].ServerSideEncryptionByDefault
	wantAlg, wantKey := "AES256", ""
	if all {
		wantAlg, wantKey = "aws:kms", everything["KmsKeyArn"]
	}
	if sse.SSEAlgorithm != wantAlg || deref(sse.KMSMasterKeyID) != wantKey {
		t.Errorf("SSE = %s %q, want %s %q", sse.SSEAlgorithm, deref(sse.KMSMasterKeyID), wantAlg, wantKey)
	}
	if b.LifecycleConfiguration == nil || len(b.LifecycleConfiguration.Rules) != 1 {
		t.Fatal("want one lifecycle rule")
	}
	rule := b.LifecycleConfiguration.Rules[0]
	if rule.AbortIncompleteMultipartUpload == nil {
		t.Error("lifecycle rule does not abort incomplete multipart uploads")
	}
	if deref(rule.Prefix) != r.vals["ArchivePrefix"] {
		t.Errorf("lifecycle rule prefix %q, want the ArchivePrefix parameter", deref(rule.Prefix))
	}
	if all {
		if got := derefInt(rule.ExpirationInDays); strconv.Itoa(got) != everything["ArchiveExpirationDays"] {
			t.Errorf("ExpirationInDays = %d, want the ArchiveExpirationDays parameter", got)
		}
		ol := b.ObjectLockConfiguration
		if !derefBool(b.ObjectLockEnabled) || ol == nil || ol.Rule == nil || ol.Rule.DefaultRetention == nil ||
			deref(ol.Rule.DefaultRetention.Mode) != "COMPLIANCE" || derefInt(ol.Rule.DefaultRetention.Days) != 30 {
			t.Errorf("Object Lock = %v %+v, want COMPLIANCE for 30 days", b.ObjectLockEnabled, ol)
		}
	} else {
		if rule.ExpirationInDays != nil {
			t.Errorf("ExpirationInDays = %d with ArchiveExpirationDays 0, want none", *rule.ExpirationInDays)
		}
		if b.ObjectLockEnabled != nil || b.ObjectLockConfiguration != nil {
			t.Error("Object Lock set although EnableObjectLock is false")
		}
	}
	if b.VersioningConfiguration == nil || b.VersioningConfiguration.Status != "Enabled" {
		t.Error("versioning is off; Object Lock needs it")
	}

	// TLS only: a Deny on aws:SecureTransport false for the bucket and its objects.
	pol, err := r.cf.GetS3BucketPolicyWithName("ArchiveBucketPolicy")
	if err != nil {
		t.Fatal(err)
	}
	if pol.Bucket != refPlaceholder("ArchiveBucket") {
		t.Errorf("bucket policy is on %q", pol.Bucket)
	}
	doc, _ := pol.PolicyDocument.(map[string]any)
	found := false
	for _, st := range asList(doc["Statement"]) {
		s, _ := st.(map[string]any)
		cond, _ := s["Condition"].(map[string]any)
		bl, _ := cond["Bool"].(map[string]any)
		if s["Effect"] == "Deny" && s["Principal"] == "*" && scalarString(bl["aws:SecureTransport"]) == "false" {
			res := asList(s["Resource"])
			if contains(res, any(getAttPlaceholder("ArchiveBucket", "Arn"))) &&
				contains(res, any(getAttPlaceholder("ArchiveBucket", "Arn")+"/*")) {
				found = true
			}
		}
	}
	if !found {
		t.Error("no Deny of non-TLS requests (aws:SecureTransport false) on the bucket and its objects")
	}
}

func checkTable(t *testing.T, r *resolved) {
	t.Helper()
	tb, err := r.cf.GetDynamoDBTableWithName("LedgerTable")
	if err != nil {
		t.Fatal(err)
	}
	if deref(tb.BillingMode) != "PAY_PER_REQUEST" {
		t.Errorf("BillingMode = %q", deref(tb.BillingMode))
	}
	keys := map[string]string{}
	for _, k := range tb.KeySchema {
		keys[k.AttributeName] = k.KeyType
	}
	if len(keys) != 2 || keys["pk"] != "HASH" || keys["sk"] != "RANGE" {
		t.Errorf("KeySchema = %v, want pk HASH, sk RANGE", keys)
	}
	attrs := map[string]string{}
	for _, a := range tb.AttributeDefinitions {
		attrs[a.AttributeName] = a.AttributeType
	}
	if len(attrs) != 2 || attrs["pk"] != "S" || attrs["sk"] != "S" {
		t.Errorf("AttributeDefinitions = %v, want pk S, sk S", attrs)
	}
	if tb.TimeToLiveSpecification == nil || deref(tb.TimeToLiveSpecification.AttributeName) != "ttl" || !tb.TimeToLiveSpecification.Enabled {
		t.Errorf("TTL = %+v, want enabled on ttl", tb.TimeToLiveSpecification)
	}
	if tb.PointInTimeRecoverySpecification == nil || !derefBool(tb.PointInTimeRecoverySpecification.PointInTimeRecoveryEnabled) {
		t.Error("point-in-time recovery is off")
	}
	if tb.SSESpecification == nil || !tb.SSESpecification.SSEEnabled {
		t.Error("SSE is off")
	}
	if tb.AWSCloudFormationDeletionPolicy != "Retain" {
		t.Errorf("LedgerTable DeletionPolicy = %q, want Retain", tb.AWSCloudFormationDeletionPolicy)
	}
}

func checkOptionalResources(t *testing.T, r *resolved, all bool) {
	t.Helper()
	for _, id := range []string{"S3GatewayEndpoint", "DynamoDBGatewayEndpoint"} {
		ep, err := r.cf.GetEC2VPCEndpointWithName(id)
		if err != nil {
			t.Fatal(err)
		}
		if ep.AWSCloudFormationCondition != "CreateGatewayEndpoints" {
			t.Errorf("%s: Condition %q, want CreateGatewayEndpoints", id, ep.AWSCloudFormationCondition)
		}
		if deref(ep.VpcEndpointType) != "Gateway" {
			t.Errorf("%s: type %q, want Gateway", id, deref(ep.VpcEndpointType))
		}
		if all && (ep.VpcId != everything["VpcId"] || len(ep.RouteTableIds) != 1) {
			t.Errorf("%s: VPC %q route tables %v, want the parameters", id, ep.VpcId, ep.RouteTableIds)
		}
	}
	if got := r.conds["CreateGatewayEndpoints"]; got != all {
		t.Errorf("CreateGatewayEndpoints = %v", got)
	}
	sub, err := r.cf.GetSNSSubscriptionWithName("AlarmEmailSubscription")
	if err != nil {
		t.Fatal(err)
	}
	if sub.AWSCloudFormationCondition != "HasAlarmEmail" || sub.Protocol != "email" || sub.TopicArn != refPlaceholder("AlarmTopic") {
		t.Errorf("AlarmEmailSubscription = %+v", sub)
	}
	if r.conds["HasAlarmEmail"] != all {
		t.Errorf("HasAlarmEmail = %v", r.conds["HasAlarmEmail"])
	}
}

// TestConditions pins what each condition is for the parameter sets.
func TestConditions(t *testing.T) {
	tp := load(t)
	optional := []string{"InVpc", "CreateGatewayEndpoints", "UseKmsKey", "UseObjectLock", "ExpireArchive",
		"HasSecretArns", "ConfigFromS3", "HasAlarmEmail", "HasReservedConcurrency", "TracingActive"}
	want := map[string]map[string]bool{
		"defaults":   {"ConfigInArchiveBucket": true},
		"fanout":     {"ConfigInArchiveBucket": true, "FanOut": true},
		"everything": {"FanOut": true},
	}
	for _, c := range optional {
		want["everything"][c] = true
	}
	for _, ps := range paramSets {
		t.Run(ps.name, func(t *testing.T) {
			got := tp.evalConditions(t, tp.paramValues(t, ps.values))
			if len(got) != len(optional)+2 {
				t.Errorf("conditions %v, want exactly %v, FanOut and ConfigInArchiveBucket", got, optional)
			}
			for name, on := range got {
				if on != want[ps.name][name] {
					t.Errorf("%s = %v, want %v", name, on, want[ps.name][name])
				}
			}
		})
	}
	// VPC without route tables: the function joins the VPC, no endpoints.
	c := tp.evalConditions(t, tp.paramValues(t, map[string]string{"SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1"}))
	if !c["InVpc"] || c["CreateGatewayEndpoints"] {
		t.Errorf("VPC without route tables: InVpc %v, CreateGatewayEndpoints %v", c["InVpc"], c["CreateGatewayEndpoints"])
	}
	// ReservedConcurrency 0 is a reservation (it stops the function).
	if c := tp.evalConditions(t, tp.paramValues(t, map[string]string{"ReservedConcurrency": "0"})); !c["HasReservedConcurrency"] {
		t.Error("ReservedConcurrency 0 does not count as a reservation")
	}
}

// TestSAMWorkaroundStillNeeded proves each property in samNewerProperties
// is one goformation still rejects, so the workaround is removed when it
// stops being needed.
func TestSAMWorkaroundStillNeeded(t *testing.T) {
	tp := load(t)
	for typ, props := range samNewerProperties {
		for _, p := range props {
			var ids []string
			for _, id := range tp.resourceIDs(typ) {
				if _, ok := tp.props(id)[p]; ok {
					ids = append(ids, id)
				}
			}
			if len(ids) == 0 {
				t.Errorf("%s.%s is listed as a workaround but unused; remove it", typ, p)
				continue
			}
			for _, id := range ids {
				doc := map[string]any{"Resources": map[string]any{id: map[string]any{
					"Type":       typ,
					"Properties": map[string]any{p: tp.props(id)[p]},
				}}}
				js, _ := json.Marshal(doc)
				_, err := goformation.ParseJSONWithOptions(js, &intrinsics.ProcessorOptions{NoProcess: true})
				if err == nil {
					t.Errorf("goformation now accepts %s.%s; drop it from samNewerProperties", typ, p)
				} else if !strings.Contains(err.Error(), p) {
					t.Errorf("goformation rejects %s.%s for another reason: %v", typ, p, err)
				}
			}
		}
	}
	// Event properties: with one of them goformation decodes no event.
	r := tp.resolve(t, everything)
	const queue = "arn:aws:sqs:eu-west-1:123456789012:popconn-JobQueue.fifo"
	for evType, props := range samNewerEventProperties {
		if evType != "SQS" {
			t.Errorf("samNewerEventProperties[%s]: this test checks SQS events only", evType)
			continue
		}
		for _, p := range props {
			n := 0
			for id, newer := range r.newer {
				for key, v := range newer {
					name, prop, ok := strings.Cut(strings.TrimPrefix(key, "Events."), ".")
					if !strings.HasPrefix(key, "Events.") || !ok || prop != p {
						continue
					}
					n++
					if fn := goformationEvent(t, id, name, evType, map[string]any{"Queue": queue}); fn == nil || fn.SQSEvent == nil {
						t.Fatalf("goformation decodes no SAM %s event even without %s: the check proves nothing", evType, p)
					}
					if fn := goformationEvent(t, id, name, evType, map[string]any{"Queue": queue, p: v}); fn != nil && fn.SQSEvent != nil {
						t.Errorf("goformation now decodes a SAM %s event with %s; drop it from samNewerEventProperties", evType, p)
					}
				}
			}
			if n == 0 {
				t.Errorf("%s event property %s is listed as a workaround but unused; remove it", evType, p)
			}
		}
	}
}

// goformationEvent parses a function with one event of type evType and
// properties props, and returns goformation's typed event properties.
func goformationEvent(t *testing.T, id, name, evType string, props map[string]any) *serverless.Function_Properties {
	t.Helper()
	doc := map[string]any{"Resources": map[string]any{id: map[string]any{
		"Type": "AWS::Serverless::Function",
		"Properties": map[string]any{"Events": map[string]any{name: map[string]any{
			"Type": evType, "Properties": props,
		}}},
	}}}
	js, _ := json.Marshal(doc)
	cf, err := goformation.ParseJSONWithOptions(js, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		return nil
	}
	fn, err := cf.GetServerlessFunctionWithName(id)
	if err != nil {
		t.Fatal(err)
	}
	return fn.Events[name].Properties
}

// TestReferences checks that every name used is defined and every
// parameter and condition defined is used.
func TestReferences(t *testing.T) {
	tp := load(t)
	params := tp.section("Parameters")
	conds := tp.section("Conditions")
	resources := tp.section("Resources")
	usedParams, usedConds := map[string]bool{}, map[string]bool{}
	for _, ref := range tp.allReferences() {
		switch ref.kind {
		case "Ref", "Sub":
			_, isParam := params[ref.name]
			_, isRes := resources[ref.name]
			switch {
			case isParam && ref.attr == "":
				usedParams[ref.name] = true
			case isRes:
			case isPseudo(ref.name) && ref.attr == "":
			default:
				t.Errorf("%s: %s to undefined %q", ref.at, ref.kind, ref.name+attrSuffix(ref.attr))
			}
		case "GetAtt", "DependsOn":
			if _, ok := resources[ref.name]; !ok {
				t.Errorf("%s: %s of undefined resource %q", ref.at, ref.kind, ref.name)
			}
		case "Condition", "If":
			if _, ok := conds[ref.name]; !ok {
				t.Errorf("%s: undefined condition %q", ref.at, ref.name)
			}
			usedConds[ref.name] = true
		}
	}
	for name := range params {
		if !usedParams[name] {
			t.Errorf("parameter %s is never referenced", name)
		}
	}
	for name := range conds {
		if !usedConds[name] {
			t.Errorf("condition %s is never used", name)
		}
	}
}

func attrSuffix(a string) string {
	if a == "" {
		return ""
	}
	return "." + a
}

// TestParameters checks each parameter's own declaration: a description,
// and a default that meets its constraints (CloudFormation refuses a
// default that does not, but only at deployment).
func TestParameters(t *testing.T) {
	tp := load(t)
	for name, p := range tp.section("Parameters") {
		pm := p.(map[string]any)
		t.Run(name, func(t *testing.T) {
			if d, _ := pm["Description"].(string); strings.TrimSpace(d) == "" {
				t.Error("no Description")
			}
			typ := scalarString(pm["Type"])
			switch typ {
			case "String", "Number", "CommaDelimitedList":
			default:
				t.Errorf("type %q: the tests support String, Number and CommaDelimitedList", typ)
			}
			if pm["NoEcho"] != nil {
				t.Error("NoEcho parameter: no secret may be a parameter; reference it from the configuration")
			}
			def, ok := pm["Default"]
			if !ok {
				t.Fatal("no Default: every parameter needs one so that a guided deployment can accept it")
			}
			checkConstraint(t, "default", pm, scalarString(def))
			if v, ok := everything[name]; ok {
				checkConstraint(t, "test value", pm, v)
			}
			for _, w := range []string{"password", "passwd", "secretvalue", "token"} {
				if strings.Contains(strings.ToLower(name), w) {
					t.Errorf("parameter name suggests a secret (%s); secrets belong in SSM or Secrets Manager", w)
				}
			}
		})
	}
}

func checkConstraint(t *testing.T, what string, pm map[string]any, v string) {
	t.Helper()
	if pat, ok := pm["AllowedPattern"].(string); ok {
		re, err := regexp.Compile(pat)
		if err != nil {
			t.Errorf("AllowedPattern %q does not compile: %v", pat, err)
		} else if !re.MatchString(v) {
			t.Errorf("%s %q does not match AllowedPattern %q", what, v, pat)
		}
	}
	if av, ok := pm["AllowedValues"].([]any); ok {
		found := false
		for _, a := range av {
			if scalarString(a) == v {
				found = true
			}
		}
		if !found {
			t.Errorf("%s %q not in AllowedValues %v", what, v, av)
		}
	}
	if scalarString(pm["Type"]) == "Number" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			t.Errorf("%s %q is not a number", what, v)
			return
		}
		if mn, ok := pm["MinValue"].(float64); ok && f < mn {
			t.Errorf("%s %v below MinValue %v", what, f, mn)
		}
		if mx, ok := pm["MaxValue"].(float64); ok && f > mx {
			t.Errorf("%s %v above MaxValue %v", what, f, mx)
		}
	}
}

// TestConfigSourceIsReadable: the configuration the functions are told to
// read (POPCONN_CONFIG) lies where their policy lets them read it, for
// each parameter set; the SSM path stays readable for SecureString
// passwords and an ssm: configuration.
func TestConfigSourceIsReadable(t *testing.T) {
	tp := load(t)
	for _, ps := range append(paramSets, namedParams{"ssm", map[string]string{"ConfigSource": "ssm:/popconn/config"}}) {
		t.Run(ps.name, func(t *testing.T) {
			r := tp.resolve(t, ps.values)
			fn, err := r.cf.GetServerlessFunctionWithName("PollerFunction")
			if err != nil {
				t.Fatal(err)
			}
			src := fn.Environment.Variables["POPCONN_CONFIG"]
			var wantAction, wantResource string
			switch {
			case strings.HasPrefix(src, "s3://"):
				wantAction = "s3:GetObject"
				bucketKey := strings.TrimPrefix(src, "s3://")
				if b, k, _ := strings.Cut(bucketKey, "/"); b == refPlaceholder("ArchiveBucket") {
					wantResource = getAttPlaceholder("ArchiveBucket", "Arn") + "/" + k
					if strings.HasPrefix(k, scalarString(r.vals["ArchivePrefix"])) {
						t.Errorf("%s lies under the archive prefix, whose lifecycle rule would expire it", k)
					}
				} else {
					wantResource = "arn:aws:s3:::" + bucketKey
				}
			case strings.HasPrefix(src, "ssm:"):
				name := strings.TrimPrefix(src, "ssm:")
				if !strings.HasPrefix(name, scalarString(r.vals["ConfigParameterPath"])) {
					t.Errorf("ConfigSource %q is not under ConfigParameterPath", src)
				}
				wantAction = "ssm:GetParameter"
				wantResource = "arn:aws:ssm:eu-west-1:123456789012:parameter" + scalarString(r.vals["ConfigParameterPath"]) + "*"
			default:
				t.Fatalf("POPCONN_CONFIG %q: the test knows s3:// and ssm:", src)
			}
			pol, err := r.cf.GetIAMManagedPolicyWithName("MailboxAccessPolicy")
			if err != nil {
				t.Fatal(err)
			}
			doc, _ := pol.PolicyDocument.(map[string]any)
			found := false
			for _, st := range asList(doc["Statement"]) {
				s, _ := st.(map[string]any)
				if s == nil || s["Effect"] != "Allow" {
					continue
				}
				if contains(asList(s["Action"]), any(wantAction)) && contains(asList(s["Resource"]), any(wantResource)) {
					found = true
				}
			}
			if !found {
				t.Errorf("POPCONN_CONFIG %q, but MailboxAccessPolicy allows no %s on %s", src, wantAction, wantResource)
			}
		})
	}
	bucketKey, _ := strings.CutPrefix(everything["ConfigSource"], "s3://")
	if everything["ConfigS3ObjectArn"] != "arn:aws:s3:::"+bucketKey {
		t.Errorf("test values disagree: %s vs %s", everything["ConfigSource"], everything["ConfigS3ObjectArn"])
	}
}

// TestEveryResourceHasAComment: a "#" comment line directly above each
// logical ID in the Resources section says why the resource exists.
func TestEveryResourceHasAComment(t *testing.T) {
	tp := load(t)
	lines := strings.Split(tp.text, "\n")
	idLine := regexp.MustCompile(`^  ([A-Za-z0-9]+):\s*$`)
	inResources := false
	seen := map[string]bool{}
	for i, l := range lines {
		if len(l) > 0 && l[0] != ' ' && l[0] != '#' {
			inResources = strings.HasPrefix(l, "Resources:")
			continue
		}
		if !inResources {
			continue
		}
		m := idLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		seen[m[1]] = true
		if i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") || len(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(lines[i-1]), "#"))) == 0 {
			t.Errorf("line %d: resource %s has no comment directly above it", i+1, m[1])
		}
	}
	for _, id := range tp.resourceIDs("") {
		if !seen[id] {
			t.Errorf("resource %s not found at the expected indentation in the YAML text", id)
		}
	}
	if len(seen) != len(tp.resourceIDs("")) {
		t.Errorf("found %d logical IDs in the text, the template has %d", len(seen), len(tp.resourceIDs("")))
	}
}

func strictDecode(v any, into any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

func asList(v any) []any {
	switch x := v.(type) {
	case []any:
		return x
	case nil:
		return nil
	}
	return []any{v}
}

func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func derefInt(p *int) int    { return deref(p) }
func derefBool(p *bool) bool { return deref(p) }
