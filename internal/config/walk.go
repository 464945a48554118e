package config

import "slices"

// Walk calls fn for every place an index names a table, depth first in the
// order the config writes them, with the columns the config names on that
// table there:
//
//   - the root, with its key;
//   - for each relation: the parent, with the columns its join reads
//     there; a many_to_many's through table, with both joins' columns;
//     the relation's table, with its key and its join's columns; then the
//     relations and aggregates below it;
//   - for each aggregate: the parent (its join's columns), then the
//     aggregate's table.
//
// A table named in several places is visited in each. This is the one
// description of which tables an index reads: build loads them into its
// catalog, provision checks them. An error from fn stops the walk.
func Walk(cfg *Config, fn func(index, table string, cols []string) error) error {
	for _, ix := range cfg.Indexes {
		w := walker{index: ix.Name, fn: fn}
		if err := w.visit(place{ix.Table, slices.Clone(ix.Key)}); err != nil {
			return err
		}
		if err := w.below(ix.Table, ix.Relations, ix.Aggregates); err != nil {
			return err
		}
	}
	return nil
}

type place struct {
	table string
	cols  []string
}

type walker struct {
	index string
	fn    func(index, table string, cols []string) error
}

func (w walker) visit(places ...place) error {
	for _, p := range places {
		if err := w.fn(w.index, p.table, p.cols); err != nil {
			return err
		}
	}
	return nil
}

func (w walker) below(parent string, rels []Relation, aggs []Aggregate) error {
	for _, r := range rels {
		var err error
		if th := r.Through; th != nil {
			err = w.visit(place{parent, th.Join.Froms()},
				place{th.Table, slices.Concat(th.Join.Tos(), th.TargetJoin.Froms())},
				place{r.Table, slices.Concat(r.Key, th.TargetJoin.Tos())})
		} else {
			err = w.visit(place{parent, r.Join.Froms()}, place{r.Table, slices.Concat(r.Key, r.Join.Tos())})
		}
		if err != nil {
			return err
		}
		if err := w.below(r.Table, r.Relations, r.Aggregates); err != nil {
			return err
		}
	}
	for _, a := range aggs {
		if err := w.visit(place{parent, a.Join.Froms()}, place{a.Table, a.Join.Tos()}); err != nil {
			return err
		}
	}
	return nil
}
