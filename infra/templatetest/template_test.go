package templatetest

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation/lambda"
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
			checkFunction(t, r, all)
			checkBucket(t, r, all)
			checkTable(t, r)
			checkOptionalResources(t, r, all)
		})
	}
}

func checkFunction(t *testing.T, r *resolved, all bool) {
	t.Helper()
	fn, err := r.cf.GetServerlessFunctionWithName("PollerFunction")
	if err != nil {
		t.Fatal(err)
	}
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
	if got := derefInt(fn.ReservedConcurrentExecutions); got != 1 {
		t.Errorf("ReservedConcurrentExecutions = %d by default, want 1", got)
	}
	if got := deref(fn.Role); got != getAttPlaceholder("PollerRole", "Arn") {
		t.Errorf("Role = %q, want the PollerRole", got)
	}
	if fn.Policies != nil {
		t.Error("Policies set: with an explicit Role SAM ignores them; put permissions in PollerRole")
	}

	// Environment: exactly these variables, none of them a secret.
	want := map[string]string{
		"POPCONN_CONFIG":                  scalarString(r.vals["ConfigSource"]),
		"POPCONN_ARCHIVE_BUCKET":          refPlaceholder("ArchiveBucket"),
		"POPCONN_ARCHIVE_PREFIX":          scalarString(r.vals["ArchivePrefix"]),
		"POPCONN_LEDGER_TABLE":            refPlaceholder("LedgerTable"),
		"POPCONN_LEDGER_RECORD_RETENTION": scalarString(r.vals["LedgerRecordRetentionHours"]) + "h",
		"POPCONN_METRICS_NAMESPACE":       scalarString(r.vals["MetricsNamespace"]),
	}
	if fn.Environment == nil {
		t.Fatal("no Environment")
	}
	for k, v := range fn.Environment.Variables {
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
		if _, ok := fn.Environment.Variables[k]; !ok {
			t.Errorf("environment variable %s missing", k)
		}
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

	// The schedule: one EventBridge schedule whose payload the poller
	// reads as a scheduled poll.
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
		input := deref(se.Input)
		var got lambdafn.Event
		if err := json.Unmarshal([]byte(input), &got); err != nil {
			t.Errorf("event %s: Input %q is rejected by the poller: %v", name, input, err)
		} else if got.Trigger != lambdafn.TriggerSchedule {
			t.Errorf("event %s: Input %q decodes as trigger %q, want %q", name, input, got.Trigger, lambdafn.TriggerSchedule)
		}
	}

	// LoggingConfig, taken out for goformation's stale SAM types: decode
	// it strictly as the AWS::Lambda::Function type SAM passes it to.
	lc, ok := r.newer["PollerFunction"]["LoggingConfig"]
	if !ok {
		t.Fatal("PollerFunction has no LoggingConfig")
	}
	var cfg lambda.Function_LoggingConfig
	if err := strictDecode(lc, &cfg); err != nil {
		t.Errorf("LoggingConfig is not a valid AWS::Lambda::Function LoggingConfig: %v", err)
	}
	if deref(cfg.LogFormat) != "Text" {
		t.Errorf("LogFormat = %q, want Text (each stdout line one event, as EMF needs)", deref(cfg.LogFormat))
	}
	if deref(cfg.LogGroup) != refPlaceholder("PollerLogGroup") {
		t.Errorf("LogGroup = %q, want the PollerLogGroup", deref(cfg.LogGroup))
	}

	if all {
		if fn.VpcConfig == nil || len(fn.VpcConfig.SubnetIds) != 2 || len(fn.VpcConfig.SecurityGroupIds) != 1 {
			t.Errorf("VpcConfig = %+v, want the SubnetIds and SecurityGroupIds parameters", fn.VpcConfig)
		}
	} else if fn.VpcConfig != nil {
		t.Errorf("VpcConfig = %+v without SubnetIds", fn.VpcConfig)
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

// TestConditions pins what each condition is for the two parameter sets.
func TestConditions(t *testing.T) {
	tp := load(t)
	want := map[string]bool{
		"InVpc": true, "CreateGatewayEndpoints": true, "UseKmsKey": true, "UseObjectLock": true,
		"ExpireArchive": true, "HasSecretArns": true, "ConfigFromS3": true, "HasAlarmEmail": true,
	}
	for _, ps := range paramSets {
		t.Run(ps.name, func(t *testing.T) {
			got := tp.evalConditions(t, tp.paramValues(t, ps.values))
			if len(got) != len(want) {
				t.Errorf("conditions %v, want exactly %v", got, want)
			}
			for name, on := range want {
				if ps.name == "defaults" {
					on = false
				}
				if got[name] != on {
					t.Errorf("%s = %v, want %v", name, got[name], on)
				}
			}
		})
	}
	// VPC without route tables: the function joins the VPC, no endpoints.
	c := tp.evalConditions(t, tp.paramValues(t, map[string]string{"SubnetIds": "subnet-1", "SecurityGroupIds": "sg-1"}))
	if !c["InVpc"] || c["CreateGatewayEndpoints"] {
		t.Errorf("VPC without route tables: InVpc %v, CreateGatewayEndpoints %v", c["InVpc"], c["CreateGatewayEndpoints"])
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

// TestConfigSourceIsReadable: the default configuration source lies where
// the role may read it, and the S3 test value matches its ARN parameter.
func TestConfigSourceIsReadable(t *testing.T) {
	tp := load(t)
	vals := tp.paramValues(t, defaults)
	src, path := scalarString(vals["ConfigSource"]), scalarString(vals["ConfigParameterPath"])
	name, ok := strings.CutPrefix(src, "ssm:")
	if !ok || !strings.HasPrefix(name, path) {
		t.Errorf("default ConfigSource %q is not under ConfigParameterPath %q, which the role can read", src, path)
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
