package templatetest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/awslabs/goformation/v7"
	"github.com/awslabs/goformation/v7/cloudformation"
	"github.com/awslabs/goformation/v7/intrinsics"
)

// repoRoot is the directory holding go.mod, found upwards from the test's
// working directory (the package directory).
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// tmpl is template.yaml in its three forms.
type tmpl struct {
	path string
	text string         // the YAML as written
	raw  map[string]any // JSON form, intrinsics in long form and unresolved
}

var (
	loadOnce sync.Once
	loaded   *tmpl
	loadErr  error
)

func load(t *testing.T) *tmpl {
	t.Helper()
	root := repoRoot(t)
	loadOnce.Do(func() {
		p := filepath.Join(root, "template.yaml")
		data, err := os.ReadFile(p)
		if err != nil {
			loadErr = err
			return
		}
		// NoProcess: only turn the short forms (!Ref, !Sub...) into the
		// long forms and YAML into JSON; resolve nothing.
		js, err := intrinsics.ProcessYAML(data, &intrinsics.ProcessorOptions{NoProcess: true})
		if err != nil {
			loadErr = fmt.Errorf("%s: %w", p, err)
			return
		}
		var raw map[string]any
		if err := json.Unmarshal(js, &raw); err != nil {
			loadErr = err
			return
		}
		loaded = &tmpl{path: p, text: string(data), raw: raw}
	})
	if loadErr != nil {
		t.Fatalf("load template: %v", loadErr)
	}
	return loaded
}

func (tp *tmpl) section(name string) map[string]any {
	m, _ := tp.raw[name].(map[string]any)
	return m
}

func (tp *tmpl) resourceType(id string) string {
	r, _ := tp.section("Resources")[id].(map[string]any)
	s, _ := r["Type"].(string)
	return s
}

// resourceCondition is the Condition attribute of resource id, "" if none.
func (tp *tmpl) resourceCondition(id string) string {
	r, _ := tp.section("Resources")[id].(map[string]any)
	s, _ := r["Condition"].(string)
	return s
}

func (tp *tmpl) resourceIDs(typ string) []string {
	var ids []string
	for id := range tp.section("Resources") {
		if typ == "" || tp.resourceType(id) == typ {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func (tp *tmpl) props(id string) map[string]any {
	r, _ := tp.section("Resources")[id].(map[string]any)
	p, _ := r["Properties"].(map[string]any)
	return p
}

// Test values for the pseudo parameters.
var pseudo = map[string]any{
	"AWS::AccountId":        "123456789012",
	"AWS::Region":           "eu-west-1",
	"AWS::Partition":        "aws",
	"AWS::StackName":        "popconn-test",
	"AWS::StackId":          "arn:aws:cloudformation:eu-west-1:123456789012:stack/popconn-test/00000000-0000-0000-0000-000000000000",
	"AWS::URLSuffix":        "amazonaws.com",
	"AWS::NotificationARNs": []any{},
	"AWS::NoValue":          nil,
}

// Parameter sets the template is resolved and checked under, shared with
// samcheck.py through paramsets.json: defaults (single mode), fanout, and
// everything (fanout with every optional feature on).
var (
	paramSets  = loadParamSets()
	defaults   = paramSet("defaults")
	fanout     = paramSet("fanout")
	everything = paramSet("everything")
)

type namedParams struct {
	name   string
	values map[string]string
}

func loadParamSets() []namedParams {
	b, err := os.ReadFile("paramsets.json")
	if err != nil {
		panic(err)
	}
	var f struct {
		Sets map[string]map[string]string `json:"sets"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		panic(fmt.Sprintf("paramsets.json: %v", err))
	}
	var out []namedParams
	for _, name := range []string{"defaults", "fanout", "everything"} {
		v, ok := f.Sets[name]
		if !ok {
			panic("paramsets.json has no set " + name)
		}
		out = append(out, namedParams{name, v})
	}
	if len(f.Sets) != len(out) {
		panic("paramsets.json has sets the tests do not know")
	}
	return out
}

func paramSet(name string) map[string]string {
	for _, ps := range paramSets {
		if ps.name == name {
			return ps.values
		}
	}
	panic(name)
}

// paramValues returns every parameter's value: the default, replaced by
// overrides, typed as CloudFormation hands it to resources (lists split,
// numbers as numbers so typed decoders accept them).
func (tp *tmpl) paramValues(t *testing.T, overrides map[string]string) map[string]any {
	t.Helper()
	vals := map[string]any{}
	for name, p := range tp.section("Parameters") {
		pm := p.(map[string]any)
		typ, _ := pm["Type"].(string)
		var s string
		if o, ok := overrides[name]; ok {
			s = o
		} else if d, ok := pm["Default"]; ok {
			s = scalarString(d)
		} else {
			t.Fatalf("parameter %s has no default and no test value", name)
		}
		switch {
		case typ == "Number":
			f, err := strconv.ParseFloat(s, 64)
			if err != nil {
				t.Fatalf("parameter %s: %q is not a number", name, s)
			}
			vals[name] = f
		case typ == "CommaDelimitedList" || strings.HasPrefix(typ, "List<"):
			var l []any
			for _, e := range strings.Split(s, ",") {
				l = append(l, e)
			}
			vals[name] = l
		default:
			vals[name] = s
		}
	}
	for name := range overrides {
		if _, ok := vals[name]; !ok {
			t.Fatalf("test value for unknown parameter %s", name)
		}
	}
	return vals
}

func scalarString(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(x)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

// evalConditions evaluates the Conditions section for vals. goformation's
// own evaluation cannot be used: with EvaluateConditions it also replaces
// every resource that has a Condition attribute by a boolean, and without
// it Fn::And/Fn::Or cannot follow {"Condition": name}.
func (tp *tmpl) evalConditions(t *testing.T, vals map[string]any) map[string]bool {
	t.Helper()
	raw := tp.section("Conditions")
	out := map[string]bool{}
	var eval func(name string, depth int) bool
	var cond func(v any, depth int) bool
	var value func(v any) any
	value = func(v any) any {
		m, ok := v.(map[string]any)
		if !ok || len(m) != 1 {
			return v
		}
		for k, arg := range m {
			switch k {
			case "Ref":
				name, _ := arg.(string)
				if pv, ok := vals[name]; ok {
					return pv
				}
				if pv, ok := pseudo[name]; ok {
					return pv
				}
				t.Fatalf("condition refers to unknown %q", name)
			case "Fn::Join":
				a, _ := arg.([]any)
				if len(a) != 2 {
					t.Fatalf("Fn::Join needs [sep, list]: %v", arg)
				}
				list, ok := value(a[1]).([]any)
				if !ok {
					t.Fatalf("Fn::Join of a non-list: %v", a[1])
				}
				parts := make([]string, len(list))
				for i, e := range list {
					parts[i] = scalarString(value(e))
				}
				return strings.Join(parts, scalarString(a[0]))
			case "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition":
				return cond(v, 0)
			}
		}
		t.Fatalf("unsupported function in a condition: %v", v)
		return nil
	}
	cond = func(v any, depth int) bool {
		if depth > 20 {
			t.Fatal("conditions nest too deep (a cycle?)")
		}
		if b, ok := v.(bool); ok {
			return b
		}
		m, ok := v.(map[string]any)
		if !ok || len(m) != 1 {
			t.Fatalf("not a condition: %v", v)
		}
		for k, arg := range m {
			a, _ := arg.([]any)
			switch k {
			case "Condition":
				return eval(arg.(string), depth+1)
			case "Fn::Equals":
				if len(a) != 2 {
					t.Fatalf("Fn::Equals needs two values: %v", arg)
				}
				x, y := value(a[0]), value(a[1])
				return scalarString(x) == scalarString(y)
			case "Fn::Not":
				if len(a) != 1 {
					t.Fatalf("Fn::Not needs one condition: %v", arg)
				}
				return !cond(a[0], depth+1)
			case "Fn::And", "Fn::Or":
				if len(a) < 2 || len(a) > 10 {
					t.Fatalf("%s needs 2 to 10 conditions: %v", k, arg)
				}
				and := k == "Fn::And"
				for _, c := range a {
					if cond(c, depth+1) != and {
						return !and
					}
				}
				return and
			}
		}
		t.Fatalf("not a condition function: %v", v)
		return false
	}
	eval = func(name string, depth int) bool {
		if b, ok := out[name]; ok {
			return b
		}
		c, ok := raw[name]
		if !ok {
			t.Fatalf("condition %q is not defined", name)
		}
		b := cond(c, depth)
		out[name] = b
		return b
	}
	for name := range raw {
		eval(name, 0)
	}
	return out
}

// Placeholders the resolver puts where CloudFormation would put a value
// known only at deployment.
func refPlaceholder(id string) string          { return "ref(" + id + ")" }
func getAttPlaceholder(id, attr string) string { return "getatt(" + id + "." + attr + ")" }

var subVar = regexp.MustCompile(`\$\{([^!}][^}]*)\}`)

// resolved is the template for one parameter set.
type resolved struct {
	vals  map[string]any
	conds map[string]bool
	// doc is the template with every intrinsic function resolved, what
	// resolved to AWS::NoValue removed, and the Globals merged into the
	// functions.
	doc map[string]any
	// cf is doc decoded by goformation into typed resources, minus the
	// properties in samNewerProperties.
	cf *cloudformation.Template
	// newer holds the properties taken out for goformation, by resource
	// (event properties as "Events.<name>.<property>").
	newer map[string]map[string]any
}

// samNewerProperties are valid AWS::Serverless::Function properties that
// goformation v7.14.9 rejects because its SAM specification predates them.
// SAM passes each unchanged to AWS::Lambda::Function, so the tests decode
// them with goformation's strict AWS::Lambda::Function types instead, and
// check them against the CloudFormation specification (spec_test.go).
// TestSAMWorkaroundStillNeeded fails once goformation accepts one.
var samNewerProperties = map[string][]string{
	// Lambda advanced logging controls, November 2023.
	"AWS::Serverless::Function": {"LoggingConfig"},
}

// samNewerEventProperties are the same for SAM event sources, by event
// type: with one of them goformation decodes no event of that type (it
// does not fail, the typed event stays nil). SAM passes them to the
// AWS::Lambda::EventSourceMapping it generates; checkWorkerEvents decodes
// them strictly as that type, and samcheck.py runs the SAM translator.
// They are kept in resolved.newer under "Events.<name>.<property>".
var samNewerEventProperties = map[string][]string{
	"SQS": {
		"FunctionResponseTypes", // partial batch responses, November 2021
		"ScalingConfig",         // maximum concurrency, January 2023
	},
}

// dropNoValue removes what resolved to AWS::NoValue (nil) from maps and
// lists, as CloudFormation does.
func dropNoValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range x {
			if e != nil {
				out[k] = dropNoValue(e)
			}
		}
		return out
	case []any:
		out := []any{}
		for _, e := range x {
			if e != nil {
				out = append(out, dropNoValue(e))
			}
		}
		return out
	}
	return v
}

// mergeGlobals applies the template's Globals.Function to each
// AWS::Serverless::Function as SAM does: a function's own value wins,
// maps (Environment.Variables) are merged key by key.
func mergeGlobals(doc map[string]any) {
	g, _ := doc["Globals"].(map[string]any)
	fg, _ := g["Function"].(map[string]any)
	if fg == nil {
		return
	}
	var merge func(global, own any) any
	merge = func(global, own any) any {
		gm, gok := global.(map[string]any)
		om, ook := own.(map[string]any)
		if !gok || !ook {
			if own != nil {
				return own
			}
			return global
		}
		out := map[string]any{}
		for k, v := range gm {
			out[k] = v
		}
		for k, v := range om {
			out[k] = merge(gm[k], v)
		}
		return out
	}
	for _, res := range doc["Resources"].(map[string]any) {
		rm := res.(map[string]any)
		if rm["Type"] != "AWS::Serverless::Function" {
			continue
		}
		props, _ := rm["Properties"].(map[string]any)
		if props == nil {
			props = map[string]any{}
			rm["Properties"] = props
		}
		for k, gv := range fg {
			if ov, ok := props[k]; ok {
				props[k] = merge(gv, ov)
			} else {
				props[k] = gv
			}
		}
	}
	delete(doc, "Globals")
}

func (tp *tmpl) resolve(t *testing.T, overrides map[string]string) *resolved {
	t.Helper()
	r := &resolved{vals: tp.paramValues(t, overrides), newer: map[string]map[string]any{}}
	r.conds = tp.evalConditions(t, r.vals)
	ref := func(name string) any {
		if v, ok := r.vals[name]; ok {
			return v
		}
		if v, ok := pseudo[name]; ok {
			return v
		}
		if _, ok := tp.section("Resources")[name]; ok {
			return refPlaceholder(name)
		}
		t.Errorf("Ref to unknown %q", name)
		return nil
	}
	handlers := map[string]intrinsics.IntrinsicHandler{
		"Ref": func(_ string, in, _ any) any {
			name, _ := in.(string)
			return ref(name)
		},
		"Fn::GetAtt": func(_ string, in, _ any) any {
			id, attr := splitGetAtt(in)
			return getAttPlaceholder(id, attr)
		},
		"Fn::If": func(_ string, in, _ any) any {
			a, _ := in.([]any)
			if len(a) != 3 {
				t.Errorf("Fn::If needs [condition, then, else]: %v", in)
				return nil
			}
			name, _ := a[0].(string)
			b, ok := r.conds[name]
			if !ok {
				t.Errorf("Fn::If on unknown condition %q", name)
			}
			if b {
				return a[1]
			}
			return a[2]
		},
		"Fn::Sub": func(_ string, in, _ any) any {
			src, vars := "", map[string]any{}
			switch x := in.(type) {
			case string:
				src = x
			case []any:
				if len(x) == 2 {
					src, _ = x[0].(string)
					vars, _ = x[1].(map[string]any)
				}
			}
			return subVar.ReplaceAllStringFunc(src, func(m string) string {
				name := m[2 : len(m)-1]
				if v, ok := vars[name]; ok {
					return scalarString(v)
				}
				if id, attr, ok := strings.Cut(name, "."); ok && !strings.HasPrefix(name, "AWS::") {
					return getAttPlaceholder(id, attr)
				}
				v := ref(name)
				if l, ok := v.([]any); ok {
					t.Errorf("Fn::Sub of the list parameter %s", name)
					return fmt.Sprint(l)
				}
				return scalarString(v)
			})
		},
	}
	rawJSON, err := json.Marshal(tp.raw)
	if err != nil {
		t.Fatal(err)
	}
	js, err := intrinsics.ProcessJSON(rawJSON, &intrinsics.ProcessorOptions{IntrinsicHandlerOverrides: handlers})
	if err != nil {
		t.Fatalf("resolve intrinsics: %v", err)
	}
	if err := json.Unmarshal(js, &r.doc); err != nil {
		t.Fatal(err)
	}
	mergeGlobals(r.doc)
	r.doc = dropNoValue(r.doc).(map[string]any)
	// A copy without the properties goformation's SAM types do not know.
	js, err = json.Marshal(r.doc)
	if err != nil {
		t.Fatal(err)
	}
	var forCF map[string]any
	if err := json.Unmarshal(js, &forCF); err != nil {
		t.Fatal(err)
	}
	for id, res := range forCF["Resources"].(map[string]any) {
		rm := res.(map[string]any)
		props, _ := rm["Properties"].(map[string]any)
		keep := func(key string, v any) {
			if r.newer[id] == nil {
				r.newer[id] = map[string]any{}
			}
			r.newer[id][key] = v
		}
		for _, p := range samNewerProperties[scalarString(rm["Type"])] {
			if v, ok := props[p]; ok {
				keep(p, v)
				delete(props, p)
			}
		}
		events, _ := props["Events"].(map[string]any)
		for name, ev := range events {
			em, _ := ev.(map[string]any)
			ep, _ := em["Properties"].(map[string]any)
			for _, p := range samNewerEventProperties[scalarString(em["Type"])] {
				if v, ok := ep[p]; ok {
					keep("Events."+name+"."+p, v)
					delete(ep, p)
				}
			}
		}
	}
	cfJSON, err := json.Marshal(forCF)
	if err != nil {
		t.Fatal(err)
	}
	r.cf, err = goformation.ParseJSONWithOptions(cfJSON, &intrinsics.ProcessorOptions{NoProcess: true})
	if err != nil {
		t.Fatalf("goformation rejects the resolved template: %v", err)
	}
	return r
}

func (r *resolved) props(id string) map[string]any {
	res, _ := r.doc["Resources"].(map[string]any)[id].(map[string]any)
	p, _ := res["Properties"].(map[string]any)
	return p
}

func splitGetAtt(in any) (id, attr string) {
	switch x := in.(type) {
	case string:
		id, attr, _ = strings.Cut(x, ".")
	case []any:
		if len(x) == 2 {
			id, _ = x[0].(string)
			attr, _ = x[1].(string)
		}
	}
	return id, attr
}

// reference is one use of a name in the template.
type reference struct {
	kind string // Ref, GetAtt, Sub, Condition, If, DependsOn
	name string // the logical ID, parameter or condition
	attr string // GetAtt attribute, Sub "X.Attr"
	at   string // where, for messages
}

// references lists every reference in v (walked in a stable order).
func references(v any, at string) []reference {
	var out []reference
	var walk func(v any, at string)
	walk = func(v any, at string) {
		switch x := v.(type) {
		case map[string]any:
			if len(x) == 1 {
				for k, arg := range x {
					switch k {
					case "Ref":
						out = append(out, reference{kind: "Ref", name: scalarString(arg), at: at})
						return
					case "Fn::GetAtt":
						id, attr := splitGetAtt(arg)
						out = append(out, reference{kind: "GetAtt", name: id, attr: attr, at: at})
						return
					case "Condition":
						if s, ok := arg.(string); ok {
							out = append(out, reference{kind: "Condition", name: s, at: at})
							return
						}
					case "Fn::If":
						if a, ok := arg.([]any); ok && len(a) == 3 {
							out = append(out, reference{kind: "If", name: scalarString(a[0]), at: at})
							walk(a[1], at)
							walk(a[2], at)
							return
						}
					case "Fn::Sub":
						src, vars := "", map[string]any{}
						switch s := arg.(type) {
						case string:
							src = s
						case []any:
							if len(s) == 2 {
								src, _ = s[0].(string)
								vars, _ = s[1].(map[string]any)
								walk(s[1], at)
							}
						}
						for _, m := range subVar.FindAllStringSubmatch(src, -1) {
							if _, ok := vars[m[1]]; ok {
								continue
							}
							name, attr, _ := strings.Cut(m[1], ".")
							if strings.HasPrefix(m[1], "AWS::") {
								name, attr = m[1], ""
							}
							out = append(out, reference{kind: "Sub", name: name, attr: attr, at: at})
						}
						return
					}
				}
			}
			keys := make([]string, 0, len(x))
			for k := range x {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(x[k], at+"."+k)
			}
		case []any:
			for i, e := range x {
				walk(e, fmt.Sprintf("%s[%d]", at, i))
			}
		}
	}
	walk(v, at)
	return out
}

// allReferences lists the references of the whole template, including
// resource Condition and DependsOn attributes.
func (tp *tmpl) allReferences() []reference {
	var out []reference
	for _, sec := range []string{"Conditions", "Rules", "Outputs", "Globals"} {
		out = append(out, references(tp.raw[sec], sec)...)
	}
	for _, id := range tp.resourceIDs("") {
		res := tp.section("Resources")[id].(map[string]any)
		at := "Resources." + id
		if c, ok := res["Condition"].(string); ok {
			out = append(out, reference{kind: "Condition", name: c, at: at + ".Condition"})
		}
		switch d := res["DependsOn"].(type) {
		case string:
			out = append(out, reference{kind: "DependsOn", name: d, at: at})
		case []any:
			for _, e := range d {
				out = append(out, reference{kind: "DependsOn", name: scalarString(e), at: at})
			}
		}
		out = append(out, references(res["Properties"], at+".Properties")...)
		out = append(out, references(res["Metadata"], at+".Metadata")...)
	}
	return out
}

func isPseudo(name string) bool {
	_, ok := pseudo[name]
	return ok
}

func contains[T comparable](s []T, v T) bool { return slices.Contains(s, v) }
