package build

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flusso-pg/flusso-pg/internal/config"
)

// OpenPool connects a pool for building documents: RuntimeParams set on
// every connection, application_name flusso-pg unless the DSN names one, at
// most maxConns connections (0: pgx's default), and a first connection made
// at once so bad credentials fail here. Errors never show the password.
func OpenPool(ctx context.Context, dsn string, maxConns int) (*pgxpool.Pool, error) {
	pc, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("source.dsn %s: %w", config.RedactDSN(dsn), err)
	}
	for k, v := range RuntimeParams {
		pc.ConnConfig.RuntimeParams[k] = v
	}
	if _, ok := pc.ConnConfig.RuntimeParams["application_name"]; !ok {
		pc.ConnConfig.RuntimeParams["application_name"] = "flusso-pg"
	}
	if maxConns > 0 {
		pc.MaxConns = int32(maxConns)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", config.RedactDSN(dsn), err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("connect to %s: %w", config.RedactDSN(dsn), err)
	}
	return pool, nil
}
