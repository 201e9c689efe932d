package modpushappserver

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"

	_ "github.com/jackc/pgx/v5/stdlib" // Prosody's SQL store in PostgreSQL
)

// openPostgres opens Prosody's SQL store in PostgreSQL; url is a
// postgres:// connection URL.
func openPostgres(ctx context.Context, url string) (Source, io.Closer, error) {
	db, err := sql.Open("pgx", url)
	if err != nil {
		// The driver's message may quote the URL, password included.
		return nil, nil, errors.New("not a valid PostgreSQL connection URL")
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	return SQLStore{DB: db, Name: "in PostgreSQL", Placeholder: "$1"}, db, nil
}
