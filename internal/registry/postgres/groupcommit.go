package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/push-appserver/push-appserver/internal/registry"
	"github.com/push-appserver/push-appserver/internal/registry/groupcommit"
)

// Registrations are group-committed (see groupcommit), as on SQLite: a
// batch is one transaction with one locking read of all its rows, their
// writes sent in one pipeline and one commit (one WAL flush) for all,
// instead of four round trips and a flush each. A row that its decide
// function or a device key held by another node refuses is left out and
// answered with that error alone; any other failure (a statement's, the
// commit's, or another instance creating one of the nodes at the same
// moment) rolls the batch back, and each registration is stored again
// through the single path, so a race is settled as it is without
// batching. One writer per instance: a batch waiting on a row another
// instance holds locked holds up this instance's registrations behind it,
// at most for the lock timeout (the statement timeout).

// Register reads the node's row locked, decides and writes in one
// transaction, shared with the registrations arriving at the same time.
// Two instances creating the same node at once cannot both insert: the one
// that loses the race starts over and decides again on the winner's row,
// as if they had gone one after the other.
func (s *Store) Register(ctx context.Context, node string, decide registry.Decide) (registry.Registration, error) {
	return s.gc.Register(ctx, node, decide)
}

// committer is the Store as its group-commit queue sees it.
type committer struct{ s *Store }

func (c committer) CommitOne(req *groupcommit.Request) { c.s.commitOne(req) }
func (c committer) CommitBatch(batch []*groupcommit.Request) error {
	if len(batch) == 1 {
		c.s.commitOne(batch[0])
		return nil
	}
	return c.s.commitBatch(batch)
}

// commitOne stores one request through the single path and answers it.
func (s *Store) commitOne(req *groupcommit.Request) {
	// Bounded here too: a caller without a deadline (an ad-hoc command)
	// on a connection gone silent would hold the writer, and every
	// registration behind it, until TCP gives up.
	ctx, cancel := context.WithTimeout(req.Ctx, s.opts.StatementTimeout+time.Second)
	defer cancel()
	r, a, err := s.registerAlone(ctx, req.Node, req.Decide)
	req.R, req.Err = r, err
	s.answerWhenAcked(a, []*groupcommit.Request{req})
}

// answerWhenAcked answers reqs once the other instances acked a, that is
// dropped what they cached; at once when there is nothing to wait for. The
// writer goes on with the next batch meanwhile. A request for a node
// whose acks the feed going down cut short is answered
// registry.ErrUnconfirmed (see barrier.wait), the renewals of that node
// in the batch too: their answer carries the change.
func (s *Store) answerWhenAcked(a acks, reqs []*groupcommit.Request) {
	answer := func() {
		for _, req := range reqs {
			req.Answer()
		}
	}
	if len(a) == 0 {
		answer()
		return
	}
	go func() {
		cut := s.bar.waitAll(a, true)
		for _, req := range reqs {
			if req.Err == nil && slices.Contains(cut, req.Node) {
				req.R, req.Err = registry.Registration{}, fmt.Errorf("register: %w", errCut)
			}
		}
		answer()
	}()
}

// commitBatch stores the batch in one transaction and answers every
// request once it committed. On an error it answers no one and returns
// the error: nothing of the batch was stored.
func (s *Store) commitBatch(batch []*groupcommit.Request) error {
	// The transaction is the writer's, not any caller's: one caller giving
	// up must not roll back the others' rows. The statement timeout bounds
	// it on the server's side; a connection gone silent (the database's
	// host gone, its address moved) answers nothing, so the client bounds
	// it too: the single writer must not wait on it until TCP gives up.
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.StatementTimeout+time.Second)
	defer cancel()
	nodes := make([]string, 0, len(batch))
	seen := make(map[string]bool, len(batch))
	for _, req := range batch {
		req.R, req.Err = registry.Registration{}, nil
		if err := req.Ctx.Err(); err != nil {
			req.Err = fmt.Errorf("register: %w", err)
			continue
		}
		if !seen[req.Node] {
			seen[req.Node] = true
			nodes = append(nodes, req.Node)
		}
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	others, err := s.bar.name(ctx, tx)
	if err != nil {
		return err
	}
	// The other instances' acks, expected before the commit; released
	// unanswered if the batch fails.
	var acks acks
	defer func() { s.bar.waitAll(acks, false) }()
	// Locked in node order, as UpdatePushStatus locks: no deadlock.
	rows, err := tx.Query(ctx, `SELECT `+columns+` FROM registrations WHERE node = ANY($1) ORDER BY node FOR UPDATE`, nodes)
	if err != nil {
		return err
	}
	cur := make(map[string]registry.Registration, len(nodes))
	for rows.Next() {
		r, err := scan(rows)
		if err != nil {
			rows.Close()
			return err
		}
		cur[r.Node] = r
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	keys := batchKeys{cur: cur, written: make(map[string]bool, len(nodes))}
	var writes pgx.Batch
	live := 0
	for _, req := range batch {
		if req.Err != nil {
			continue
		}
		old, found := cur[req.Node]
		r, err := req.Decide(old, found)
		if err != nil {
			req.Err = err
			continue
		}
		if r.Node != req.Node {
			req.Err = fmt.Errorf("register: decided on node %q for node %q", r.Node, req.Node)
			continue
		}
		if r.DeviceKey != "" {
			held, err := keys.heldByOther(ctx, tx, r.DeviceKey, r.Node)
			if err != nil {
				return err
			}
			if held {
				req.Err = fmt.Errorf("register: device key held by another node: %w", registry.ErrConflict)
				continue
			}
		}
		args := []any{r.Node, r.Type, r.Token, r.Secret, r.Registered, null(r.Renewed), null(r.LastSuccessfulPush),
			null(r.LastPushError), r.LastErrorReason, r.Domain, nullString(r.DeviceKey), r.Owner, r.Account}
		if found {
			writes.Queue(sqlUpdate, args...)
		} else {
			writes.Queue(sqlInsert, args...)
		}
		if announced(old, found, r) {
			acks.expect(&s.bar, r.Node, others)
		}
		cur[r.Node] = r
		keys.written[r.Node] = true
		req.R = r
		live++
	}
	if live > 0 {
		res := tx.SendBatch(ctx, &writes)
		for range live {
			tag, err := res.Exec()
			if err != nil {
				res.Close()
				return err
			}
			if tag.RowsAffected() == 0 {
				// Another instance created the node after our read: the
				// single path settles it.
				res.Close()
				return errRaced
			}
		}
		if err := res.Close(); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		s.gc.Committed(batch)
	}
	// The acks are answerWhenAcked's now, not the deferred release's; the
	// writer reuses batch.
	pending := acks
	acks = nil
	s.answerWhenAcked(pending, slices.Clone(batch))
	return nil
}

// batchKeys answers whether a device key is held by another node, as the
// unique index would see it after the batch's earlier rows: rows written
// in the batch count as decided, the others as stored.
type batchKeys struct {
	cur     map[string]registry.Registration // rows as the batch leaves them so far
	written map[string]bool                  // nodes the batch writes
}

func (k batchKeys) heldByOther(ctx context.Context, tx pgx.Tx, key, node string) (bool, error) {
	for n := range k.written {
		if n != node && k.cur[n].DeviceKey == key {
			return true, nil
		}
	}
	rows, err := tx.Query(ctx, `SELECT node FROM registrations WHERE device_key = $1 AND node <> $2`, key, node)
	if err != nil {
		return false, err
	}
	holders, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return false, err
	}
	for _, h := range holders {
		// A node the batch rewrote holds what the batch gave it.
		if !k.written[h] || k.cur[h].DeviceKey == key {
			return true, nil
		}
	}
	return false, nil
}

const (
	sqlUpdate = `UPDATE registrations SET type = $2, token = $3, secret = $4, registered = $5,
		renewed = $6, last_successful_push = $7, last_push_error = $8, last_error_reason = $9,
		domain = $10, device_key = $11, owner = $12, account = $13 WHERE node = $1`
	sqlInsert = `INSERT INTO registrations (` + columns + `)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) ON CONFLICT (node) DO NOTHING`
)
