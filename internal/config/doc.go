// Package config reads flusso-pg's configuration: a YAML file (the keys of
// docs/configuration.md), FLUSSO_* environment variables that
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
//	flusso.yaml: line 6: index "posts".relatons: unknown key "relatons" (did you mean "relations"?); allowed keys here: ...
//	flusso.yaml: line 12: index "posts".relations[tags].through: missing: many_to_many needs through: {table, join, target_join}
//	log.level (from FLUSSO_LOG_LEVEL): "loud" is not one of debug, info, warn, error
//
// Problems are found in two passes: the shape of the file first (YAML
// syntax, unknown keys, keys given twice, values of the wrong type), then,
// only when the shape is right, the values (Validate). Each pass reports all
// of its problems at once.
//
// Checks against the live catalog (tables, columns, types, keys, replica
// identity) belong to internal/build. The DSN's password is never part of a
// message: log a DSN only through RedactDSN.
package config
