package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// yaml.v3 (v3.0.1) reports decode problems as strings in *yaml.TypeError.
// These patterns turn them into FieldErrors with a path. The type-mismatch
// message of yaml.v3 quotes part of the value; ours never does, so a
// password typed under the wrong key is not repeated.
var (
	reSyntax     = regexp.MustCompile(`(?s)^yaml: line (\d+): (.*)$`)
	reUnknownKey = regexp.MustCompile(`(?s)^line (\d+): field (.*) not found in type (\S+)$`)
	reDupKey     = regexp.MustCompile(`(?s)^line (\d+): mapping key "(.*)" already defined at line (\d+)$`)
	reMismatch   = regexp.MustCompile(`(?s)^line (\d+): cannot unmarshal (!!\w+)(?: .*)? into (\S+)$`)
	reOwn        = regexp.MustCompile(`(?s)^line (\d+): column (\d+): (.*)$`)
	reLine       = regexp.MustCompile(`(?s)^line (\d+): (.*)$`)
)

func syntaxError(err error) FieldError {
	s := err.Error()
	if m := reSyntax.FindStringSubmatch(s); m != nil {
		line, _ := strconv.Atoi(m[1])
		return FieldError{Line: line, Msg: "YAML syntax error: " + m[2]}
	}
	return FieldError{Msg: "YAML syntax error: " + strings.TrimPrefix(s, "yaml: ")}
}

// translateTypeErrors converts yaml.v3 decode messages to FieldErrors. It
// also returns the paths whose decoding failed, so that validation errors
// caused by the resulting zero values can be dropped.
func translateTypeErrors(msgs []string, root *yaml.Node) (Errors, []string) {
	ix := indexNodes(root)
	var errs Errors
	var suppress []string
	for _, s := range msgs {
		if m := reUnknownKey.FindStringSubmatch(s); m != nil {
			line, _ := strconv.Atoi(m[1])
			path := ix.keyPath(line, m[2])
			msg := "unknown key"
			if hint := keyHint(m[2], m[3]); hint != "" {
				msg += "; " + hint
			}
			errs = append(errs, FieldError{Path: path, Line: line, Msg: msg})
			continue
		}
		if m := reDupKey.FindStringSubmatch(s); m != nil {
			line, _ := strconv.Atoi(m[1])
			path := ix.keyPath(line, m[2])
			errs = append(errs, FieldError{Path: path, Line: line, Msg: "key repeated; it is already set on line " + m[3]})
			// yaml.v3 skips the whole mapping holding a repeated key.
			suppress = append(suppress, parentPath(path))
			continue
		}
		if m := reMismatch.FindStringSubmatch(s); m != nil {
			line, _ := strconv.Atoi(m[1])
			kind := yaml.ScalarNode
			switch m[2] {
			case "!!seq":
				kind = yaml.SequenceNode
			case "!!map":
				kind = yaml.MappingNode
			}
			path := ix.valuePath(line, kind)
			errs = append(errs, FieldError{Path: path, Line: line,
				Msg: fmt.Sprintf("expected %s, got %s", describeGoType(m[3]), describeTag(m[2]))})
			suppress = append(suppress, path)
			continue
		}
		if m := reOwn.FindStringSubmatch(s); m != nil {
			// Our own UnmarshalYAML messages (durations, sizes, secrets).
			line, _ := strconv.Atoi(m[1])
			col, _ := strconv.Atoi(m[2])
			path := ix.nodePath(line, col)
			errs = append(errs, FieldError{Path: path, Line: line, Msg: m[3]})
			if strings.HasSuffix(path, "]") {
				// A bad list item fails the whole list.
				path = parentPath(path)
			}
			suppress = append(suppress, path)
			continue
		}
		if m := reLine.FindStringSubmatch(s); m != nil {
			line, _ := strconv.Atoi(m[1])
			path := ix.valuePath(line, yaml.ScalarNode)
			errs = append(errs, FieldError{Path: path, Line: line, Msg: m[2]})
			suppress = append(suppress, path)
			continue
		}
		errs = append(errs, FieldError{Msg: s})
		suppress = append(suppress, "")
	}
	return errs, suppress
}

func describeTag(tag string) string {
	switch tag {
	case "!!str":
		return "text"
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "true/false"
	case "!!seq":
		return "a list"
	case "!!map":
		return "a mapping"
	case "!!timestamp":
		return "a timestamp"
	case "!!binary":
		return "binary data"
	}
	return "a value tagged " + tag
}

func describeGoType(t string) string {
	switch {
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint") || strings.HasPrefix(t, "*int"):
		return "a whole number"
	case t == "bool" || t == "*bool":
		return "true or false"
	case t == "string":
		return "text"
	case t == "[]config.fileMailbox":
		return "a list of mailboxes"
	case strings.HasPrefix(t, "config.file") || strings.HasPrefix(t, "*config.file"):
		return "a mapping of settings"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	}
	return t
}

// fileTypes maps yaml.v3's type names to the structs, to list valid keys.
var fileTypes = func() map[string]reflect.Type {
	m := map[string]reflect.Type{}
	for _, v := range []any{fileConfig{}, fileRetry{}, fileDelivery{}, fileAuth{}, fileArchive{}, fileLedger{}, fileLog{}, fileMailbox{}} {
		t := reflect.TypeOf(v)
		m[t.String()] = t
	}
	return m
}()

// keyHint suggests the key the user probably meant, or lists the valid ones.
func keyHint(key, typeName string) string {
	t, ok := fileTypes[typeName]
	if !ok {
		return ""
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" {
			keys = append(keys, k)
		}
	}
	norm := func(s string) string {
		return strings.NewReplacer("_", "", "-", "", " ", "").Replace(strings.ToLower(s))
	}
	best, bestD := "", 3
	for _, k := range keys {
		if norm(k) == norm(key) {
			return fmt.Sprintf("did you mean %q?", k)
		}
		if d := editDistance(strings.ToLower(key), k); d < bestD && d <= len(k)/2 {
			best, bestD = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return "valid keys here: " + strings.Join(keys, ", ")
}

// editDistance is the optimal-string-alignment distance (Levenshtein plus
// adjacent transpositions, so "tsl" is one edit from "tls"); short keys only.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 64
	}
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// nodeIndex lists the nodes of a document with their paths, in document
// order, to map a line reported by yaml.v3 back to a path.
type nodeIndex struct {
	entries []nodeEntry
}

type nodeEntry struct {
	path  string
	key   *yaml.Node // nil for sequence items and the root
	value *yaml.Node
}

func indexNodes(root *yaml.Node) *nodeIndex {
	ix := &nodeIndex{}
	if root == nil || len(root.Content) == 0 {
		return ix
	}
	var walk func(path string, key, n *yaml.Node, depth int)
	walk = func(path string, key, n *yaml.Node, depth int) {
		ix.entries = append(ix.entries, nodeEntry{path: path, key: key, value: n})
		if depth > 100 {
			return
		}
		// Alias nodes are not followed: problems are reported at the anchor.
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				walk(joinPath(path, n.Content[i].Value), n.Content[i], n.Content[i+1], depth+1)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(fmt.Sprintf("%s[%d]", path, i), nil, c, depth+1)
			}
		}
	}
	walk("", nil, root.Content[0], 0)
	return ix
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// keyPath finds the mapping key named key on line.
func (ix *nodeIndex) keyPath(line int, key string) string {
	for _, e := range ix.entries {
		if e.key != nil && e.key.Line == line && e.key.Value == key {
			return e.path
		}
	}
	return ""
}

// nodePath finds the value at line and column.
func (ix *nodeIndex) nodePath(line, col int) string {
	for _, e := range ix.entries {
		if e.value.Line == line && e.value.Column == col {
			return e.path
		}
	}
	return ix.valuePath(line, yaml.ScalarNode)
}

// valuePath finds the first value of the given kind on line, falling back
// to any value on the line.
func (ix *nodeIndex) valuePath(line int, kind yaml.Kind) string {
	for _, e := range ix.entries {
		if e.value.Line == line && e.value.Kind == kind {
			return e.path
		}
	}
	for _, e := range ix.entries {
		if e.value.Line == line {
			return e.path
		}
	}
	return ""
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// underAny reports whether path is one of prefixes or inside one of them.
func underAny(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if p == "" || path == p || strings.HasPrefix(path, p+".") || strings.HasPrefix(path, p+"[") {
			return true
		}
	}
	return false
}

// annotateLines sets Line for errors without one: the line of the key the
// path names or, when that key is absent, of the nearest enclosing one.
func (es Errors) annotateLines(root *yaml.Node) {
	if root == nil || len(root.Content) == 0 {
		return
	}
	for i := range es {
		if es[i].Line == 0 {
			es[i].Line = lineOf(root.Content[0], es[i].Path)
		}
	}
}

var reSegment = regexp.MustCompile(`^([^\[\]]*)((?:\[\d+\])*)$`)

func lineOf(n *yaml.Node, path string) int {
	line := n.Line
	if path == "" {
		return line
	}
	for _, seg := range strings.Split(path, ".") {
		m := reSegment.FindStringSubmatch(seg)
		if m == nil {
			return line
		}
		if n.Kind == yaml.AliasNode && n.Alias != nil {
			n = n.Alias
		}
		if n.Kind != yaml.MappingNode {
			return line
		}
		found := false
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == m[1] {
				line, n, found = n.Content[i].Line, n.Content[i+1], true
				break
			}
		}
		if !found {
			return line
		}
		for _, idx := range strings.FieldsFunc(m[2], func(r rune) bool { return r == '[' || r == ']' }) {
			k, _ := strconv.Atoi(idx)
			if n.Kind == yaml.AliasNode && n.Alias != nil {
				n = n.Alias
			}
			if n.Kind != yaml.SequenceNode || k >= len(n.Content) {
				return line
			}
			n = n.Content[k]
			line = n.Line
		}
	}
	return line
}
