// Package config reads flusso-pg's configuration: a YAML file (the keys of
// SPEC.md and docs/configuration.md), FLUSSO_* environment variables that
// override its scalar keys (FLUSSO_SOURCE_DSN overrides source.dsn), and the
// common command-line flags (--dsn, --slot, ...), which override both.
//
// The result is one typed Config; the rest of the program never sees YAML,
// viper or flags. Load reads a file with overrides; Parse reads bytes alone
// (tests, fuzzing).
//
// The indexes section is walked as YAML nodes rather than through viper,
// because viper lower-cases map keys and column names such as ArtistId are
// case-sensitive; walking nodes also keeps the written order of join and
// rename maps (a composite join pairs its columns in order) and the line of
// every key, for messages.
//
// Validation here is static: unknown keys (with a suggestion for a typo),
// names given twice, relation kinds and aggregate functions, keys a kind
// requires (many_to_many needs through, sum needs column), and fields of a
// document that clash. Every problem is one line naming the index and the
// path of the bad key:
//
//	flusso.yaml: line 14: index "posts".relations[comments].kind: "has_manny" is not a relation kind (did you mean "has_many"?); use one of belongs_to, has_one, has_many, many_to_many
//
// Checks against the live catalog (tables, columns, types, keys, replica
// identity) belong to internal/build. The DSN's password is never part of a
// message: log a DSN only through RedactDSN.
package config
