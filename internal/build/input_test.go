package build

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// Build tells, for every document, which of the keys it was given the
// document is for, also for a key given twice, a key whose row is gone,
// and a key spelled differently from the row (numeric scale): callers never
// have to find a key again by its text.
func TestBuildReportsTheInputPositionOfEachDocument(t *testing.T) {
	db, plan := loadBlog(t, "3", "10", "10")
	db.Exec(t, `CREATE TABLE n (id numeric PRIMARY KEY, v text); INSERT INTO n VALUES (2.0, 'two'), (3, 'three')`)
	ix := plan.Indexes[0]
	keys := []Key{{"5"}, {"424242"}, {"2"}, {"5"}, {"7"}}
	seen := map[int]bool{}
	err := ix.Build(ctxT(t), db.Pool, keys, func(d Doc) error {
		if d.Input < 0 || d.Input >= len(keys) {
			t.Fatalf("document %s: Input %d out of range", d.Key, d.Input)
		}
		if seen[d.Input] {
			t.Fatalf("document %s: Input %d reported twice", d.Key, d.Input)
		}
		seen[d.Input] = true
		if got, want := d.Values.ID(), keys[d.Input].ID(); got != want {
			t.Fatalf("document %s has Input %d, the key %v", d.Key, d.Input, keys[d.Input])
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The repeated {"5"} at position 3 is built once, reported as position 0.
	for _, pos := range []int{0, 1, 2, 4} {
		if !seen[pos] {
			t.Errorf("no document reported for key %v at position %d", keys[pos], pos)
		}
	}
	if seen[3] {
		t.Error("the repeated key was reported at its second position")
	}

	cfg := parseConfig(t, `indexes:
  - name: n
    table: public.n
`)
	nplan := mustCompile(t, db, cfg)
	nkeys := []Key{{"3"}, {"2.00"}}
	got := map[int]string{}
	deletes := map[int]string{}
	err = nplan.Indexes[0].Build(ctxT(t), db.Pool, nkeys, func(d Doc) error {
		if d.Doc == nil {
			deletes[d.Input] = d.ID // the looked-up spelling no row has
		} else {
			got[d.Input] = string(d.Doc)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] == "" || got[1] == "" {
		t.Fatalf("documents by input position: %v", got)
	}
	if !sameJSON(t, got[1], `{"id": 2.0, "v": "two"}`) {
		t.Fatalf("key 2.00 (row 2.0): document %s", got[1])
	}
	if len(deletes) != 1 || deletes[1] != "2.00" {
		t.Fatalf("deletes by input position: %v, want the spelling 2.00 at position 1", deletes)
	}
}

func TestKeyIDIsUnambiguous(t *testing.T) {
	// Postgres text never holds \x00: these are the pairs that could meet.
	cases := [][2]Key{
		{{"a", "b"}, {"ab"}},
		{{"a:b"}, {"a", "b"}},
		{{""}, {"", ""}},
		{{"a", "b:c"}, {"a:b", "c"}},
	}
	for _, c := range cases {
		if c[0].ID() == c[1].ID() {
			t.Errorf("keys %q and %q share an ID", c[0], c[1])
		}
	}
	if (Key{"1", "2"}).ID() != (Key{"1", "2"}).ID() {
		t.Error("equal keys give different IDs")
	}
}

// A single key is built by its own statement (docSQL1: one text parameter
// per key column rather than an array, so the server can keep one plan):
// each key built alone gives the same Doc as in a batch — an upsert, a
// delete for a row that is gone, a key spelled differently from the row
// (numeric scale: the row's spelling, and a delete of the looked-up one),
// and a composite key.
func TestBuildOneKeyEqualsTheBatch(t *testing.T) {
	db, plan := loadBlog(t, "3", "10", "10")
	db.Exec(t, `CREATE TABLE n (id numeric PRIMARY KEY, v text); INSERT INTO n VALUES (2.0, 'two'), (3, 'three');
		CREATE TABLE c (a int, b text, v int, PRIMARY KEY (a, b)); INSERT INTO c VALUES (1, 'x', 10), (2, 'y', 20)`)
	cfg := parseConfig(t, `indexes:
  - name: n
    table: public.n
  - name: c
    table: public.c
`)
	other := mustCompile(t, db, cfg)
	cases := []struct {
		ix   *Index
		keys []Key
	}{
		{plan.Indexes[0], []Key{{"5"}, {"424242"}, {"2"}}},
		{other.Indexes[0], []Key{{"3"}, {"2.00"}, {"9"}}},
		{other.Indexes[1], []Key{{"1", "x"}, {"2", "y"}, {"3", "z"}}},
	}
	describe := func(d Doc) string {
		return fmt.Sprintf("key %s id %s values %v doc %s", d.Key, d.ID, d.Values, d.Doc)
	}
	for _, c := range cases {
		batch := map[string][]string{} // input key → its Docs
		err := c.ix.Build(ctxT(t), db.Pool, c.keys, func(d Doc) error {
			id := c.keys[d.Input].ID()
			batch[id] = append(batch[id], describe(d))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Built alone, more than five times: the server's plan cache
		// switches to a generic plan after five executions.
		for range 7 {
			for _, k := range c.keys {
				var alone []string
				err := c.ix.Build(ctxT(t), db.Pool, []Key{k}, func(d Doc) error {
					if d.Input != 0 {
						t.Fatalf("%s: key %v alone reported Input %d", c.ix.Name(), k, d.Input)
					}
					alone = append(alone, describe(d))
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(alone, batch[k.ID()]) {
					t.Fatalf("%s: key %v built alone:\n%v\nin a batch:\n%v", c.ix.Name(), k, alone, batch[k.ID()])
				}
			}
		}
	}
	if len(plan.Indexes[0].docSQL1) == 0 || strings.Contains(plan.Indexes[0].docSQL1, "unnest") {
		t.Fatalf("the one-key statement is not one: %s", plan.Indexes[0].docSQL1)
	}
}
