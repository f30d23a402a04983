package templatetest

import (
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// grant is one action an Allow statement of an identity policy gives.
type grant struct {
	role      string // the role or managed policy holding the statement
	sid       string
	cond      string // the Fn::If condition the statement sits under, "" if none
	action    string
	resources []any
	condition any // the statement's Condition block, nil if none
}

// roleGrants walks the permission policies of every IAM role, policy and
// managed policy in the template, following Fn::If into both branches.
func roleGrants(t *testing.T, tp *tmpl) []grant {
	t.Helper()
	var out []grant
	var stmt func(role, cond string, s any)
	stmt = func(role, cond string, s any) {
		m, ok := s.(map[string]any)
		if !ok {
			t.Errorf("%s: statement %v is not an object", role, s)
			return
		}
		if f, ok := m["Fn::If"].([]any); ok && len(f) == 3 {
			c := scalarString(f[0])
			for _, branch := range f[1:] {
				if reflect.DeepEqual(branch, map[string]any{"Ref": "AWS::NoValue"}) {
					continue
				}
				stmt(role, c, branch)
			}
			return
		}
		for _, k := range []string{"NotAction", "NotResource", "NotPrincipal"} {
			if _, ok := m[k]; ok {
				t.Errorf("%s: %s grants everything but a list; name what is needed", role, k)
			}
		}
		if m["Effect"] != "Allow" {
			return // a Deny may be broad
		}
		sid := scalarString(m["Sid"])
		if sid == "" {
			t.Errorf("%s: an Allow statement without a Sid", role)
		}
		for _, a := range asList(m["Action"]) {
			s, ok := a.(string)
			if !ok {
				t.Errorf("%s %s: action %v is not a literal", role, sid, a)
				continue
			}
			out = append(out, grant{role: role, sid: sid, cond: cond, action: s, resources: asList(m["Resource"]), condition: m["Condition"]})
		}
	}
	docs := func(role string, doc any) {
		dm, _ := doc.(map[string]any)
		for _, s := range asList(dm["Statement"]) {
			stmt(role, "", s)
		}
	}
	for _, id := range tp.resourceIDs("") {
		p := tp.props(id)
		switch tp.resourceType(id) {
		case "AWS::IAM::Role":
			for _, pol := range asList(p["Policies"]) {
				pm, _ := pol.(map[string]any)
				docs(id, pm["PolicyDocument"])
			}
		case "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy":
			docs(id, p["PolicyDocument"])
		case "AWS::Serverless::Function":
			if _, ok := p["Policies"]; ok {
				t.Errorf("%s: SAM Policies; keep permissions in the role where they are checked", id)
			}
		}
	}
	return out
}

// expectedGrants is every permission the functions have:
// owner|condition|action -> the names (resources, parameters) its Resource
// must be built from; "*" for the actions that take no other resource.
// The owner is MailboxAccessPolicy (both roles), PollerRole or WorkerRole.
// dynamodb:ConditionCheckItem is absent on purpose: the ledger's
// TransactWriteItems holds only conditional Puts (internal/ledger/dynamoledger),
// which need dynamodb:PutItem; add it if a ConditionCheck item appears.
var expectedGrants = map[string][]string{
	"MailboxAccessPolicy||s3:PutObject":                               {"ArchiveBucket", "ArchivePrefix"},
	"MailboxAccessPolicy||s3:GetObject":                               {"ArchiveBucket", "ArchivePrefix"},
	"MailboxAccessPolicy||s3:AbortMultipartUpload":                    {"ArchiveBucket", "ArchivePrefix"},
	"MailboxAccessPolicy||s3:ListMultipartUploadParts":                {"ArchiveBucket", "ArchivePrefix"},
	"MailboxAccessPolicy||s3:ListBucket":                              {"ArchiveBucket"},
	"MailboxAccessPolicy||dynamodb:GetItem":                           {"LedgerTable"},
	"MailboxAccessPolicy||dynamodb:BatchGetItem":                      {"LedgerTable"},
	"MailboxAccessPolicy||dynamodb:Query":                             {"LedgerTable"},
	"MailboxAccessPolicy||dynamodb:PutItem":                           {"LedgerTable"},
	"MailboxAccessPolicy||dynamodb:UpdateItem":                        {"LedgerTable"},
	"MailboxAccessPolicy||dynamodb:DeleteItem":                        {"LedgerTable"},
	"MailboxAccessPolicy||ssm:GetParameter":                           {"ConfigParameterPath"},
	"MailboxAccessPolicy|HasSecretArns|secretsmanager:GetSecretValue": {"SecretArns"},
	"MailboxAccessPolicy|ConfigInArchiveBucket|s3:GetObject":          {"ArchiveBucket"},
	"MailboxAccessPolicy|ConfigFromS3|s3:GetObject":                   {"ConfigS3ObjectArn"},
	"MailboxAccessPolicy|UseKmsKey|kms:Decrypt":                       {"KmsKeyArn"},
	"MailboxAccessPolicy|UseKmsKey|kms:GenerateDataKey":               {"KmsKeyArn"},
	"PollerRole||logs:CreateLogStream":                                {"PollerLogGroup"},
	"PollerRole||logs:PutLogEvents":                                   {"PollerLogGroup"},
	"PollerRole||sqs:SendMessage":                                     {"DeadLetterQueue"},
	"PollerRole|FanOut|sqs:SendMessage":                               {"JobQueue"},
	"PollerRole|TracingActive|xray:PutTraceSegments":                  {"*"},
	"PollerRole|TracingActive|xray:PutTelemetryRecords":               {"*"},
	"WorkerRole||logs:CreateLogStream":                                {"WorkerLogGroup"},
	"WorkerRole||logs:PutLogEvents":                                   {"WorkerLogGroup"},
	"WorkerRole||sqs:ReceiveMessage":                                  {"JobQueue"},
	"WorkerRole||sqs:DeleteMessage":                                   {"JobQueue"},
	"WorkerRole||sqs:GetQueueAttributes":                              {"JobQueue"},
	"WorkerRole||sqs:ChangeMessageVisibility":                         {"JobQueue"},
	"WorkerRole|TracingActive|xray:PutTraceSegments":                  {"*"},
	"WorkerRole|TracingActive|xray:PutTelemetryRecords":               {"*"},
}

// starOnly are the actions that support no resource-level permission, so
// "*" is their only resource (X-Ray's PutTraceSegments and
// PutTelemetryRecords); each may appear only under TracingActive.
var starOnly = []string{"xray:PutTraceSegments", "xray:PutTelemetryRecords"}

// expectedConditions are the Condition blocks statements must carry,
// by owner|Sid.
var expectedConditions = map[string]any{
	// Listing only under the archive prefix; IfExists so that the check S3
	// makes for a missing key (no s3:prefix) still answers 404.
	"MailboxAccessPolicy|ArchiveMissingIsNotFound": map[string]any{"StringLikeIfExists": map[string]any{
		"s3:prefix": map[string]any{"Fn::Sub": "${ArchivePrefix}*"}}},
	// The key only through the services that encrypt with it.
	"MailboxAccessPolicy|CustomerManagedKey": map[string]any{"StringEquals": map[string]any{"kms:ViaService": []any{
		map[string]any{"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"},
		map[string]any{"Fn::Sub": "dynamodb.${AWS::Region}.amazonaws.com"},
		map[string]any{"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"},
		map[string]any{"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"},
	}}},
}

var actionName = regexp.MustCompile(`^[a-z0-9-]+:[A-Za-z]+$`)

// TestIAMLeastPrivilege: no wildcard actions, no unscoped or literal
// resources, exactly the expected permissions under the expected
// conditions, each explained by a comment on its line.
func TestIAMLeastPrivilege(t *testing.T) {
	tp := load(t)
	grants := roleGrants(t, tp)
	got := map[string]bool{}
	conditions := map[string]any{}
	for _, g := range grants {
		key := g.role + "|" + g.cond + "|" + g.action
		where := fmt.Sprintf("%s %s %s", g.role, g.sid, g.action)
		if g.condition != nil {
			conditions[g.role+"|"+g.sid] = g.condition
		}
		got[key] = true
		if !actionName.MatchString(g.action) {
			t.Errorf("%s: action is not a single service:Action (no wildcards)", where)
		}
		want, ok := expectedGrants[key]
		if !ok {
			t.Errorf("%s (condition %q): not an expected permission; add it to expectedGrants with its reason", where, g.cond)
			continue
		}
		if len(g.resources) == 0 {
			t.Errorf("%s: no Resource", where)
		}
		var names []string
		for _, r := range g.resources {
			if r == "*" && contains(starOnly, g.action) && g.cond == "TracingActive" {
				names = append(names, "*")
				continue
			}
			if s, ok := r.(string); ok {
				t.Errorf("%s: literal resource %q; build it from this stack's resources or parameters", where, s)
				continue
			}
			for _, ref := range references(r, where) {
				if !isPseudo(ref.name) {
					names = append(names, ref.name)
				}
			}
		}
		sort.Strings(names)
		names = compactStrings(names)
		w := append([]string(nil), want...)
		sort.Strings(w)
		if !reflect.DeepEqual(names, w) {
			t.Errorf("%s: resource built from %v, want %v", where, names, w)
		}
	}
	for key := range expectedGrants {
		if !got[key] {
			t.Errorf("expected permission %s is missing", key)
		}
	}
	for key, c := range conditions {
		if !reflect.DeepEqual(c, expectedConditions[key]) {
			t.Errorf("%s: Condition %v, want %v", key, c, expectedConditions[key])
		}
	}
	for key := range expectedConditions {
		if conditions[key] == nil {
			t.Errorf("%s: no Condition", key)
		}
	}

	// Every action in the YAML carries its reason on its line.
	inRole := false
	listed := map[string]bool{}
	item := regexp.MustCompile(`^\s*-\s+"?([a-z0-9-]+:[A-Za-z*]+)"?\s*(#\s*(.*))?$`)
	for i, l := range strings.Split(tp.text, "\n") {
		if strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "   ") && strings.HasSuffix(strings.TrimSpace(l), ":") {
			typ := tp.resourceType(strings.TrimSuffix(strings.TrimSpace(l), ":"))
			inRole = typ == "AWS::IAM::Role" || typ == "AWS::IAM::ManagedPolicy"
			continue
		}
		if !inRole {
			continue
		}
		m := item.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		listed[m[1]] = true
		if strings.TrimSpace(m[3]) == "" {
			t.Errorf("template.yaml:%d: %s has no comment saying why", i+1, m[1])
		}
	}
	for _, g := range grants {
		if !listed[g.action] {
			t.Errorf("%s is not on a list line of its own in the role, where its comment belongs", g.action)
		}
	}
}

func compactStrings(s []string) []string {
	var out []string
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}

// TestRoleTrustAndManagedPolicies: only Lambda assumes the roles, the
// worker's exists only in fanout mode, and the only managed policies are
// the stack's MailboxAccessPolicy and, only in a VPC, the VPC one.
func TestRoleTrustAndManagedPolicies(t *testing.T) {
	tp := load(t)
	roles := tp.resourceIDs("AWS::IAM::Role")
	if !reflect.DeepEqual(roles, []string{"PollerRole", "WorkerRole"}) {
		t.Fatalf("roles %v, want PollerRole and WorkerRole", roles)
	}
	if c := tp.resourceCondition("WorkerRole"); c != "FanOut" {
		t.Errorf("WorkerRole: Condition %q, want FanOut", c)
	}
	for _, id := range roles {
		p := tp.props(id)
		doc, _ := p["AssumeRolePolicyDocument"].(map[string]any)
		sts := asList(doc["Statement"])
		if len(sts) != 1 {
			t.Fatalf("%s: trust policy has %d statements, want 1", id, len(sts))
		}
		s := sts[0].(map[string]any)
		want := map[string]any{"Effect": "Allow", "Principal": map[string]any{"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
		if !reflect.DeepEqual(s, want) {
			t.Errorf("%s: trust statement %v, want %v", id, s, want)
		}
		wantMP := []any{
			map[string]any{"Ref": "MailboxAccessPolicy"},
			map[string]any{"Fn::If": []any{"InVpc",
				map[string]any{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"},
				map[string]any{"Ref": "AWS::NoValue"}}},
		}
		if mp := p["ManagedPolicyArns"]; !reflect.DeepEqual(mp, wantMP) {
			t.Errorf("%s: ManagedPolicyArns = %v, want MailboxAccessPolicy and, under InVpc, AWSLambdaVPCAccessExecutionRole", id, mp)
		}
	}
	if got := tp.resourceIDs("AWS::IAM::ManagedPolicy"); !reflect.DeepEqual(got, []string{"MailboxAccessPolicy"}) {
		t.Errorf("managed policies %v, want MailboxAccessPolicy", got)
	}
}
