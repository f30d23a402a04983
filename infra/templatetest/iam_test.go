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
	role      string
	sid       string
	cond      string // the Fn::If condition the statement sits under, "" if none
	action    string
	resources []any
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
			out = append(out, grant{role: role, sid: sid, cond: cond, action: s, resources: asList(m["Resource"])})
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

// expectedGrants is every permission the poller has: condition|action ->
// the names (resources, parameters) its Resource must be built from.
// dynamodb:ConditionCheckItem is absent on purpose: the ledger's
// TransactWriteItems holds only conditional Puts (internal/ledger/dynamoledger),
// which need dynamodb:PutItem; add it if a ConditionCheck item appears.
var expectedGrants = map[string][]string{
	"|logs:CreateLogStream":                       {"PollerLogGroup"},
	"|logs:PutLogEvents":                          {"PollerLogGroup"},
	"|s3:PutObject":                               {"ArchiveBucket", "ArchivePrefix"},
	"|s3:GetObject":                               {"ArchiveBucket", "ArchivePrefix"},
	"|s3:AbortMultipartUpload":                    {"ArchiveBucket", "ArchivePrefix"},
	"|s3:ListMultipartUploadParts":                {"ArchiveBucket", "ArchivePrefix"},
	"|s3:ListBucket":                              {"ArchiveBucket"},
	"|dynamodb:GetItem":                           {"LedgerTable"},
	"|dynamodb:BatchGetItem":                      {"LedgerTable"},
	"|dynamodb:Query":                             {"LedgerTable"},
	"|dynamodb:PutItem":                           {"LedgerTable"},
	"|dynamodb:UpdateItem":                        {"LedgerTable"},
	"|dynamodb:DeleteItem":                        {"LedgerTable"},
	"|sqs:SendMessage":                            {"DeadLetterQueue"},
	"|ssm:GetParameter":                           {"ConfigParameterPath"},
	"HasSecretArns|secretsmanager:GetSecretValue": {"SecretArns"},
	"ConfigFromS3|s3:GetObject":                   {"ConfigS3ObjectArn"},
	"UseKmsKey|kms:Decrypt":                       {"KmsKeyArn"},
	"UseKmsKey|kms:GenerateDataKey":               {"KmsKeyArn"},
}

var actionName = regexp.MustCompile(`^[a-z0-9-]+:[A-Za-z]+$`)

// TestIAMLeastPrivilege: no wildcard actions, no unscoped or literal
// resources, exactly the expected permissions under the expected
// conditions, each explained by a comment on its line.
func TestIAMLeastPrivilege(t *testing.T) {
	tp := load(t)
	grants := roleGrants(t, tp)
	got := map[string]bool{}
	for _, g := range grants {
		key := g.cond + "|" + g.action
		where := fmt.Sprintf("%s %s %s", g.role, g.sid, g.action)
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

	// Every action in the YAML carries its reason on its line.
	inRole := false
	listed := map[string]bool{}
	item := regexp.MustCompile(`^\s*-\s+"?([a-z0-9-]+:[A-Za-z*]+)"?\s*(#\s*(.*))?$`)
	for i, l := range strings.Split(tp.text, "\n") {
		if strings.HasPrefix(l, "  ") && !strings.HasPrefix(l, "   ") && strings.HasSuffix(strings.TrimSpace(l), ":") {
			inRole = tp.resourceType(strings.TrimSuffix(strings.TrimSpace(l), ":")) == "AWS::IAM::Role"
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

// TestRoleTrustAndManagedPolicies: only Lambda assumes the role, and the
// only managed policy is the VPC one, only in a VPC.
func TestRoleTrustAndManagedPolicies(t *testing.T) {
	tp := load(t)
	roles := tp.resourceIDs("AWS::IAM::Role")
	if len(roles) != 1 {
		t.Fatalf("roles %v, want the poller's only", roles)
	}
	p := tp.props(roles[0])
	doc, _ := p["AssumeRolePolicyDocument"].(map[string]any)
	sts := asList(doc["Statement"])
	if len(sts) != 1 {
		t.Fatalf("trust policy has %d statements, want 1", len(sts))
	}
	s := sts[0].(map[string]any)
	want := map[string]any{"Effect": "Allow", "Principal": map[string]any{"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("trust statement %v, want %v", s, want)
	}
	mp := p["ManagedPolicyArns"]
	wantMP := map[string]any{"Fn::If": []any{"InVpc",
		[]any{map[string]any{"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"}},
		map[string]any{"Ref": "AWS::NoValue"}}}
	if !reflect.DeepEqual(mp, wantMP) {
		t.Errorf("ManagedPolicyArns = %v, want only AWSLambdaVPCAccessExecutionRole under InVpc", mp)
	}
}
