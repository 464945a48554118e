package config

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
)

// decoder walks the YAML tree of `indexes` by hand rather than through viper:
// viper lower-cases every map key, and column names such as ArtistId are
// case-sensitive. Walking the nodes also gives line numbers and the exact
// path of every bad key, and keeps the written order of join and rename maps.
type decoder struct {
	errs []string
	// lines records the line of every key and list element by its path, so
	// that Validate's messages can name the line too.
	lines map[string]int
}

func (d *decoder) mark(path string, n *yaml.Node) {
	if n == nil || n.Line == 0 {
		return
	}
	if d.lines == nil {
		d.lines = map[string]int{}
	}
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = n.Line
	}
}

// lineOf returns the line of path, or of its nearest parent that has one.
func (d *decoder) lineOf(path string) int {
	for p := path; p != ""; {
		if l, ok := d.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			break
		}
		p = p[:i]
	}
	return 0
}

func (d *decoder) errf(n *yaml.Node, path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if n != nil && n.Line > 0 {
		d.errs = append(d.errs, oneLine(fmt.Sprintf("line %d: %s: %s", n.Line, path, msg)))
		return
	}
	d.errs = append(d.errs, oneLine(fmt.Sprintf("%s: %s", path, msg)))
}

// oneLine escapes line breaks and other control characters (which a name
// in a path may hold), so that each problem stays on one line.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, unicode.IsControl) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if unicode.IsControl(r) {
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func (d *decoder) err() error {
	if len(d.errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(d.errs, "\n"))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// entry is one key of a mapping node, in the order it was written.
type entry struct {
	key  string
	k, v *yaml.Node
}

// entries returns the entries of a mapping node in written order, reporting
// keys not in allowed (with a suggestion) and keys given twice.
func (d *decoder) entries(n *yaml.Node, path string, allowed []string) []entry {
	if n.Kind != yaml.MappingNode {
		d.errf(n, orTop(path), "must be a mapping of keys (%s)", strings.Join(allowed, ", "))
		return nil
	}
	var out []entry
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		key := k.Value
		if !slices.Contains(allowed, key) {
			hint := ""
			if s := Suggest(key, allowed); s != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", s)
			}
			d.errf(k, join(path, key), "unknown key %q%s; allowed keys here: %s", key, hint, strings.Join(sorted(allowed), ", "))
			continue
		}
		if seen[key] {
			d.errf(k, join(path, key), "key given twice")
			continue
		}
		seen[key] = true
		d.mark(join(path, key), k)
		out = append(out, entry{key: key, k: k, v: v})
	}
	return out
}

// mapping is entries as a map, for reading known keys.
func (d *decoder) mapping(n *yaml.Node, path string, allowed []string) map[string]*yaml.Node {
	out := map[string]*yaml.Node{}
	for _, e := range d.entries(n, path, allowed) {
		out[e.key] = e.v
	}
	return out
}

func orTop(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

func (d *decoder) str(n *yaml.Node, path string) string {
	if n == nil {
		return ""
	}
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		if n.Tag == "!!null" {
			return ""
		}
		d.errf(n, path, "must be a single value")
		return ""
	}
	return n.Value
}

func (d *decoder) boolean(n *yaml.Node, path string) bool {
	if n == nil {
		return false
	}
	b, err := strconv.ParseBool(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		d.errf(n, path, "must be true or false")
	}
	return b
}

func (d *decoder) integer(n *yaml.Node, path string) int {
	if n == nil {
		return 0
	}
	i, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || i < 0 {
		d.errf(n, path, "must be a non-negative whole number")
	}
	return i
}

// strs reads a list of strings; a single scalar is taken as a one-item list.
func (d *decoder) strs(n *yaml.Node, path string) []string {
	if n == nil {
		return nil
	}
	if n.Kind == yaml.ScalarNode {
		if n.Tag == "!!null" {
			return nil
		}
		return []string{n.Value}
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, path, "must be a list such as [a, b]")
		return nil
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		if c.Kind != yaml.ScalarNode || c.Value == "" {
			d.errf(c, fmt.Sprintf("%s[%d]", path, i), "must be a name")
			continue
		}
		out = append(out, c.Value)
	}
	return out
}

// pairs reads a map of names to names, keeping order and case.
func (d *decoder) pairs(n *yaml.Node, path string) Pairs {
	if n == nil || n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.MappingNode {
		d.errf(n, path, "must be a mapping such as {author_id: id}")
		return nil
	}
	var out Pairs
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if v.Kind != yaml.ScalarNode || v.Value == "" || k.Value == "" {
			d.errf(k, join(path, k.Value), "must map a column name to a column name")
			continue
		}
		if seen[k.Value] {
			d.errf(k, join(path, k.Value), "key given twice")
			continue
		}
		seen[k.Value] = true
		d.mark(join(path, k.Value), k)
		out = append(out, Pair{From: k.Value, To: v.Value})
	}
	return out
}

func (d *decoder) orderBy(n *yaml.Node, path string) []OrderBy {
	var out []OrderBy
	for i, s := range d.strs(n, path) {
		at := n
		if n.Kind == yaml.SequenceNode && i < len(n.Content) {
			at = n.Content[i]
		}
		f := strings.Fields(s)
		p := fmt.Sprintf("%s[%d]", path, i)
		switch {
		case len(f) == 1:
			out = append(out, OrderBy{Column: f[0]})
		case len(f) == 2 && strings.EqualFold(f[1], "asc"):
			out = append(out, OrderBy{Column: f[0]})
		case len(f) == 2 && strings.EqualFold(f[1], "desc"):
			out = append(out, OrderBy{Column: f[0], Desc: true})
		default:
			d.errf(at, p, "%q must be a column optionally followed by asc or desc", s)
		}
	}
	return out
}

var indexKeys = []string{"name", "table", "key", "columns", "where", "rename", "fields", "relations", "aggregates"}
var relationKeys = []string{"name", "table", "kind", "join", "through", "key", "columns", "order_by", "where", "limit", "scalar", "rename", "fields", "relations", "aggregates"}
var throughKeys = []string{"table", "join", "target_join"}
var fieldKeys = []string{"name", "expr"}
var aggregateKeys = []string{"name", "table", "join", "fn", "column", "where"}

func (d *decoder) indexes(n *yaml.Node) []Index {
	if n.Kind != yaml.SequenceNode {
		d.errf(n, "indexes", "must be a list of indexes (- name: ...)")
		return nil
	}
	out := make([]Index, 0, len(n.Content))
	for i, c := range n.Content {
		path := fmt.Sprintf("indexes[%d]", i)
		if c.Kind == yaml.MappingNode {
			if name := scalarField(c, "name"); name != "" {
				path = fmt.Sprintf("index %q", name)
			}
		}
		d.mark(path, c)
		m := d.mapping(c, path, indexKeys)
		out = append(out, Index{
			Name:       d.str(m["name"], join(path, "name")),
			Table:      d.str(m["table"], join(path, "table")),
			Key:        d.strs(m["key"], join(path, "key")),
			Columns:    d.strs(m["columns"], join(path, "columns")),
			Where:      d.str(m["where"], join(path, "where")),
			Rename:     d.pairs(m["rename"], join(path, "rename")),
			Fields:     d.computed(m["fields"], join(path, "fields")),
			Relations:  d.relations(m["relations"], join(path, "relations")),
			Aggregates: d.aggregates(m["aggregates"], join(path, "aggregates")),
		})
	}
	return out
}

func (d *decoder) relations(n *yaml.Node, path string) []Relation {
	if n == nil || n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, path, "must be a list of relations (- name: ...)")
		return nil
	}
	out := make([]Relation, 0, len(n.Content))
	for i, c := range n.Content {
		p := elemPath(path, i, c)
		d.mark(p, c)
		m := d.mapping(c, p, relationKeys)
		r := Relation{
			Name:       d.str(m["name"], join(p, "name")),
			Table:      d.str(m["table"], join(p, "table")),
			Kind:       d.str(m["kind"], join(p, "kind")),
			Join:       d.pairs(m["join"], join(p, "join")),
			Key:        d.strs(m["key"], join(p, "key")),
			Columns:    d.strs(m["columns"], join(p, "columns")),
			OrderBy:    d.orderBy(m["order_by"], join(p, "order_by")),
			Where:      d.str(m["where"], join(p, "where")),
			Limit:      d.integer(m["limit"], join(p, "limit")),
			Scalar:     d.boolean(m["scalar"], join(p, "scalar")),
			Rename:     d.pairs(m["rename"], join(p, "rename")),
			Fields:     d.computed(m["fields"], join(p, "fields")),
			Relations:  d.relations(m["relations"], join(p, "relations")),
			Aggregates: d.aggregates(m["aggregates"], join(p, "aggregates")),
		}
		if t, ok := m["through"]; ok && t.Tag != "!!null" {
			tp := join(p, "through")
			tm := d.mapping(t, tp, throughKeys)
			r.Through = &Through{
				Table:      d.str(tm["table"], join(tp, "table")),
				Join:       d.pairs(tm["join"], join(tp, "join")),
				TargetJoin: d.pairs(tm["target_join"], join(tp, "target_join")),
			}
		}
		out = append(out, r)
	}
	return out
}

func (d *decoder) aggregates(n *yaml.Node, path string) []Aggregate {
	if n == nil || n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, path, "must be a list of aggregates (- name: ...)")
		return nil
	}
	out := make([]Aggregate, 0, len(n.Content))
	for i, c := range n.Content {
		p := elemPath(path, i, c)
		d.mark(p, c)
		m := d.mapping(c, p, aggregateKeys)
		out = append(out, Aggregate{
			Name:   d.str(m["name"], join(p, "name")),
			Table:  d.str(m["table"], join(p, "table")),
			Join:   d.pairs(m["join"], join(p, "join")),
			Fn:     d.str(m["fn"], join(p, "fn")),
			Column: d.str(m["column"], join(p, "column")),
			Where:  d.str(m["where"], join(p, "where")),
		})
	}
	return out
}

// computed reads fields: a list of {name, expr}.
func (d *decoder) computed(n *yaml.Node, path string) []Field {
	if n == nil || n.Tag == "!!null" {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.errf(n, path, "must be a list of fields (- name: full_name, expr: first_name || ' ' || last_name)")
		return nil
	}
	out := make([]Field, 0, len(n.Content))
	for i, c := range n.Content {
		p := elemPath(path, i, c)
		d.mark(p, c)
		m := d.mapping(c, p, fieldKeys)
		out = append(out, Field{Name: d.str(m["name"], join(p, "name")), Expr: d.str(m["expr"], join(p, "expr"))})
	}
	return out
}

// elemPath names a list element by its name when it has one: relations[comments].
func elemPath(path string, i int, n *yaml.Node) string {
	if n.Kind == yaml.MappingNode {
		if name := scalarField(n, "name"); name != "" {
			return fmt.Sprintf("%s[%s]", path, name)
		}
	}
	return fmt.Sprintf("%s[%d]", path, i)
}

func scalarField(n *yaml.Node, key string) string {
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

func sorted(in []string) []string {
	out := append([]string(nil), in...)
	sort.Strings(out)
	return out
}

// Suggest returns the candidate nearest to s when it is close enough to be a
// likely typo, or "".
func Suggest(s string, candidates []string) string {
	best, bestDist := "", -1
	for _, c := range candidates {
		dist := levenshtein(strings.ToLower(s), strings.ToLower(c))
		if bestDist < 0 || dist < bestDist {
			best, bestDist = c, dist
		}
	}
	limit := 2
	if len(s) > 6 {
		limit = 3
	}
	if bestDist >= 0 && bestDist <= limit {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(rb)]
}
