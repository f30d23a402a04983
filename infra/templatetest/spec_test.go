package templatetest

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/popconnector/popconnector/internal/testenv"
)

// defaultSpecDir is where infra/install-deps.d/30-cdk-spec.sh installs
// @aws-cdk/aws-service-spec; POPCONN_CDK_SPEC names a db.json.gz instead.
const defaultSpecDir = "/usr/local/share/popconnector/aws-service-spec/current"

// The parts of the @aws-cdk/aws-service-spec database the tests read.
type specDB struct {
	Schema struct {
		Resource         entities[specResource] `json:"resource"`
		TypeDefinition   entities[specTypeDef]  `json:"typeDefinition"`
		Metric           entities[specMetric]   `json:"metric"`
		DimensionSet     entities[specDimSet]   `json:"dimensionSet"`
		UsesDimensionSet struct {
			Forward map[string][]struct {
				ID string `json:"$id"`
			} `json:"forward"`
		} `json:"usesDimensionSet"`
	} `json:"schema"`
}

type entities[T any] struct {
	Entities []T `json:"entities"`
}

type specResource struct {
	ID                 string                     `json:"$id"`
	CloudFormationType string                     `json:"cloudFormationType"`
	Properties         map[string]specProperty    `json:"properties"`
	Attributes         map[string]json.RawMessage `json:"attributes"`
}

type specTypeDef struct {
	ID         string                  `json:"$id"`
	Name       string                  `json:"name"`
	Properties map[string]specProperty `json:"properties"`
}

type specProperty struct {
	Type     specType `json:"type"`
	Required bool     `json:"required"`
}

type specType struct {
	Type      string `json:"type"`
	Reference *struct {
		Ref string `json:"$ref"`
	} `json:"reference"`
	Element       *specType  `json:"element"`
	Types         []specType `json:"types"`
	AllowedValues []any      `json:"allowedValues"` // strings, sometimes numbers
}

type specMetric struct {
	ID        string `json:"$id"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
}

type specDimSet struct {
	ID         string `json:"$id"`
	Dimensions []struct {
		Name string `json:"name"`
	} `json:"dimensions"`
}

// spec is the database indexed for the checks.
type spec struct {
	path      string
	resources map[string]*specResource
	types     map[string]*specTypeDef
	// metrics: namespace -> metric name -> dimension sets (sorted names).
	metrics map[string]map[string][][]string
}

var (
	specOnce sync.Once
	theSpec  *spec
	specErr  error
)

// loadSpec returns the specification, or skips the test (fails it when
// integration is required) with the reason it is missing.
func loadSpec(t *testing.T) *spec {
	t.Helper()
	path := os.Getenv("POPCONN_CDK_SPEC")
	if path == "" {
		path = filepath.Join(defaultSpecDir, "db.json.gz")
	}
	if _, err := os.Stat(path); err != nil {
		msg := fmt.Sprintf("CloudFormation specification not found at %s (run infra/install-deps.d/30-cdk-spec.sh or set POPCONN_CDK_SPEC): %v", path, err)
		if testenv.Required() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	specOnce.Do(func() { theSpec, specErr = readSpec(path) })
	if specErr != nil {
		t.Fatalf("read %s: %v", path, specErr)
	}
	return theSpec
}

func readSpec(path string) (*spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	var db specDB
	if err := json.NewDecoder(zr).Decode(&db); err != nil {
		return nil, err
	}
	s := &spec{path: path, resources: map[string]*specResource{}, types: map[string]*specTypeDef{}, metrics: map[string]map[string][][]string{}}
	for i := range db.Schema.Resource.Entities {
		r := &db.Schema.Resource.Entities[i]
		s.resources[r.CloudFormationType] = r
	}
	for i := range db.Schema.TypeDefinition.Entities {
		td := &db.Schema.TypeDefinition.Entities[i]
		s.types[td.ID] = td
	}
	dimSets := map[string][]string{}
	for _, d := range db.Schema.DimensionSet.Entities {
		var names []string
		for _, n := range d.Dimensions {
			names = append(names, n.Name)
		}
		sort.Strings(names)
		dimSets[d.ID] = names
	}
	for _, m := range db.Schema.Metric.Entities {
		if s.metrics[m.Namespace] == nil {
			s.metrics[m.Namespace] = map[string][][]string{}
		}
		sets := s.metrics[m.Namespace][m.Name]
		for _, ref := range db.Schema.UsesDimensionSet.Forward[m.ID] {
			sets = append(sets, dimSets[ref.ID])
		}
		s.metrics[m.Namespace][m.Name] = sets
	}
	if len(s.resources) < 100 || len(s.metrics) == 0 {
		return nil, fmt.Errorf("implausible specification: %d resource types, %d metric namespaces", len(s.resources), len(s.metrics))
	}
	return s, nil
}

// checkProps checks properties against their definitions: unknown names,
// missing required ones, then each value.
func (s *spec) checkProps(at string, props map[string]any, defs map[string]specProperty) []string {
	var errs []string
	names := make([]string, 0, len(props))
	for k := range props {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		def, ok := defs[k]
		if !ok {
			errs = append(errs, fmt.Sprintf("%s.%s: not a property of this type", at, k))
			continue
		}
		if props[k] == nil {
			continue // AWS::NoValue
		}
		errs = append(errs, s.checkValue(at+"."+k, props[k], def.Type)...)
	}
	for k, def := range defs {
		if def.Required && props[k] == nil {
			errs = append(errs, fmt.Sprintf("%s.%s: required property missing", at, k))
		}
	}
	sort.Strings(errs)
	return errs
}

func (s *spec) checkValue(at string, v any, ty specType) []string {
	bad := func(want string) []string {
		return []string{fmt.Sprintf("%s: %s, want %s", at, describe(v), want)}
	}
	switch ty.Type {
	case "string", "date-time":
		switch x := v.(type) {
		case string, float64, bool:
			if len(ty.AllowedValues) > 0 && !slices.ContainsFunc(ty.AllowedValues, func(a any) bool { return scalarString(a) == scalarString(x) }) {
				return []string{fmt.Sprintf("%s: %q is not one of %v", at, scalarString(x), ty.AllowedValues)}
			}
		default:
			return bad("a string")
		}
	case "integer", "number":
		switch x := v.(type) {
		case float64:
			if ty.Type == "integer" && x != float64(int64(x)) {
				return bad("an integer")
			}
		case string:
			if _, err := strconv.ParseFloat(x, 64); err != nil {
				return bad("a number")
			}
		default:
			return bad("a number")
		}
	case "boolean":
		switch x := v.(type) {
		case bool:
		case string:
			if x != "true" && x != "false" {
				return bad("a boolean")
			}
		default:
			return bad("a boolean")
		}
	case "json":
	case "tag":
		m, ok := v.(map[string]any)
		if !ok || m["Key"] == nil {
			return bad("a {Key, Value} tag")
		}
	case "array":
		l, ok := v.([]any)
		if !ok {
			return bad("a list")
		}
		var errs []string
		for i, e := range l {
			if ty.Element != nil {
				errs = append(errs, s.checkValue(fmt.Sprintf("%s[%d]", at, i), e, *ty.Element)...)
			}
		}
		return errs
	case "map":
		m, ok := v.(map[string]any)
		if !ok {
			return bad("a map")
		}
		var errs []string
		for k, e := range m {
			if ty.Element != nil {
				errs = append(errs, s.checkValue(at+"."+k, e, *ty.Element)...)
			}
		}
		return errs
	case "ref":
		m, ok := v.(map[string]any)
		if !ok {
			return bad("an object")
		}
		if ty.Reference == nil || s.types[ty.Reference.Ref] == nil {
			return []string{at + ": the specification's type reference is dangling"}
		}
		return s.checkProps(at, m, s.types[ty.Reference.Ref].Properties)
	case "union":
		var first []string
		for i, alt := range ty.Types {
			errs := s.checkValue(at, v, alt)
			if len(errs) == 0 {
				return nil
			}
			if i == 0 {
				first = errs
			}
		}
		return first
	default:
		return []string{fmt.Sprintf("%s: the specification has type %q, which this test does not know", at, ty.Type)}
	}
	return nil
}

func describe(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 60 {
		b = append(b[:57], "..."...)
	}
	return fmt.Sprintf("%T %s", v, b)
}

// resourceAttributes are the keys a resource may have besides Type.
var resourceAttributes = []string{"Type", "Properties", "Condition", "DependsOn", "Metadata", "DeletionPolicy", "UpdateReplacePolicy", "CreationPolicy", "UpdatePolicy"}

// samPassThrough are AWS::Serverless::Function properties SAM copies to
// the AWS::Lambda::Function it generates without change, so the
// CloudFormation specification of that type applies to them.
var samPassThrough = []string{
	"Architectures", "Description", "Environment", "Handler", "LoggingConfig", "MemorySize",
	"ReservedConcurrentExecutions", "Role", "Runtime", "Timeout", "VpcConfig",
}

// TestResourcesMatchSpecification checks every resource, resolved for each
// parameter set, against the CloudFormation resource specification.
func TestResourcesMatchSpecification(t *testing.T) {
	sp := loadSpec(t)
	tp := load(t)
	t.Logf("specification: %s", sp.path)
	for _, ps := range paramSets {
		t.Run(ps.name, func(t *testing.T) {
			r := tp.resolve(t, ps.values)
			res := r.doc["Resources"].(map[string]any)
			for _, id := range tp.resourceIDs("") {
				rm := res[id].(map[string]any)
				for k := range rm {
					if !contains(resourceAttributes, k) {
						t.Errorf("%s: unknown resource attribute %s", id, k)
					}
				}
				typ := scalarString(rm["Type"])
				props, _ := rm["Properties"].(map[string]any)
				var errs []string
				switch {
				case typ == "AWS::Serverless::Function":
					pass := map[string]any{}
					for _, k := range samPassThrough {
						if v, ok := props[k]; ok {
							pass[k] = v
						}
					}
					lf := sp.resources["AWS::Lambda::Function"]
					for _, e := range sp.checkProps(id, pass, lf.Properties) {
						if !strings.Contains(e, "required property missing") { // Code is generated by SAM from CodeUri
							errs = append(errs, e)
						}
					}
				case strings.HasPrefix(typ, "AWS::Serverless::"):
					t.Errorf("%s: %s has no check; add one", id, typ)
				default:
					def, ok := sp.resources[typ]
					if !ok {
						t.Errorf("%s: %s is not in the specification", id, typ)
						continue
					}
					errs = sp.checkProps(id, props, def.Properties)
				}
				for _, e := range errs {
					t.Error(e)
				}
			}
		})
	}
}

// TestGetAttAttributesExist checks each Fn::GetAtt (and ${X.Attr}) names an
// attribute the resource type has.
func TestGetAttAttributesExist(t *testing.T) {
	sp := loadSpec(t)
	tp := load(t)
	n := 0
	for _, ref := range tp.allReferences() {
		if ref.attr == "" || (ref.kind != "GetAtt" && ref.kind != "Sub") {
			continue
		}
		typ := tp.resourceType(ref.name)
		if typ == "AWS::Serverless::Function" {
			typ = "AWS::Lambda::Function"
		}
		def, ok := sp.resources[typ]
		if !ok {
			t.Errorf("%s: GetAtt %s.%s: type %q unknown", ref.at, ref.name, ref.attr, typ)
			continue
		}
		if _, ok := def.Attributes[ref.attr]; !ok {
			t.Errorf("%s: %s has no attribute %s", ref.at, typ, ref.attr)
		}
		n++
	}
	if n == 0 {
		t.Error("no GetAtt found: the walk is broken")
	}
}

// awsMetricExists reports whether namespace/name exists in the
// specification with exactly the dimension names dims.
func (s *spec) awsMetricExists(namespace, name string, dims []string) error {
	byName, ok := s.metrics[namespace]
	if !ok {
		return fmt.Errorf("namespace %s not in the specification", namespace)
	}
	sets, ok := byName[name]
	if !ok {
		return fmt.Errorf("%s has no metric %s", namespace, name)
	}
	d := append([]string(nil), dims...)
	sort.Strings(d)
	for _, set := range sets {
		if strings.Join(set, ",") == strings.Join(d, ",") {
			return nil
		}
	}
	return fmt.Errorf("%s %s has dimension sets %v, not %v", namespace, name, sets, d)
}
