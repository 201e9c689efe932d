package postgres

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Replication is what the PostgreSQL server the store writes to says of
// its streaming standbys, and whether our commits wait for one of them:
// a registration is answered OK once committed, and what a commit
// survives decides whether the device's secret survives a crash or a
// failover. Without a standby that received it, a registration
// committed in the last moments before the primary died is missing on
// the standby that takes over, and the user's server, which holds its
// node and secret, has every push to it refused as to an unknown node
// (ejabberd disables push for the user at the first such answer).
type Replication struct {
	// InRecovery: the server is itself a standby, which takes no
	// writes, so no commit of ours is at stake there.
	InRecovery bool
	// Standbys is how many physical standbys stream from the server now
	// (rows of pg_stat_replication, which every role sees; logical
	// replication's senders, which feed no standby, are left out).
	Standbys int
	// SyncStandbys is how many of them a commit may wait for (sync_state
	// sync or quorum), or -1 when the role may not see it (that takes
	// pg_read_all_stats, which pg_monitor has).
	SyncStandbys int
	// StandbyNames is synchronous_standby_names: empty, commits wait for
	// no standby, whatever synchronous_commit says.
	StandbyNames string
	// SyncCommit is synchronous_commit as our sessions have it, and
	// SyncCommitSource where that value comes from (pg_settings.source:
	// "database", "user", "database user", "client" for the DSN,
	// "configuration file", "default", ...). We set none of our own:
	// the DBA's (the server's, the role's, the database's) or the DSN's
	// applies.
	SyncCommit, SyncCommitSource string
	// Role and Database are our role and database, quoted as SQL
	// identifiers, for the statements the warnings suggest.
	Role, Database string
}

// Replication asks the server the pool writes to (the one a failover
// may have moved it to since) what Replication holds.
func (s *Store) Replication(ctx context.Context) (Replication, error) {
	r := Replication{SyncStandbys: -1}
	var sync, unseen int
	// A physical walsender serves no database (datid is null in
	// pg_stat_activity, which every role sees), a logical one does.
	err := s.pool.QueryRow(ctx, `SELECT pg_is_in_recovery(),
		(SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_activity a ON a.pid = r.pid WHERE a.datid IS NULL),
		(SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_activity a ON a.pid = r.pid WHERE a.datid IS NULL AND r.sync_state IN ('sync', 'quorum')),
		(SELECT count(*) FROM pg_stat_replication r JOIN pg_stat_activity a ON a.pid = r.pid WHERE a.datid IS NULL AND r.sync_state IS NULL),
		current_setting('synchronous_standby_names'), s.setting, s.source,
		quote_ident(current_user), quote_ident(current_database())
		FROM pg_settings s WHERE s.name = 'synchronous_commit'`).Scan(
		&r.InRecovery, &r.Standbys, &sync, &unseen, &r.StandbyNames, &r.SyncCommit, &r.SyncCommitSource, &r.Role, &r.Database)
	if err != nil {
		return Replication{}, fmt.Errorf("reading the registry's replication settings: %w", err)
	}
	if unseen == 0 {
		r.SyncStandbys = sync
	}
	return r, nil
}

// waits reports whether a commit waits for a standby, by the settings:
// synchronous_standby_names names one, and synchronous_commit is on,
// remote_write or remote_apply (local and off never wait).
func (r Replication) waits() bool {
	switch r.SyncCommit {
	case "on", "remote_write", "remote_apply":
		return strings.TrimSpace(r.StandbyNames) != ""
	}
	return false
}

// required is how many standbys a commit waits for by
// synchronous_standby_names: num_sync of "[FIRST] num_sync (names)" or
// "ANY num_sync (names)", 1 for a plain list of names, 0 when empty.
func (r Replication) required() int {
	names := strings.TrimSpace(r.StandbyNames)
	if names == "" {
		return 0
	}
	m := regexp.MustCompile(`(?i)^(?:(?:ANY|FIRST)\s+)?([0-9]+)\s*\(`).FindStringSubmatch(names)
	if m == nil {
		return 1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return 1
	}
	return n
}

// streamingNamed is how many of the standbys synchronous_standby_names
// names stream now, and whether that is exact: without pg_monitor
// (SyncStandbys -1), the standbys that stream are as many as it can be.
func (r Replication) streamingNamed() (n int, exact bool) {
	if r.SyncStandbys < 0 {
		return r.Standbys, false
	}
	return r.SyncStandbys, true
}

// tooFew reports whether a commit waits for more of the standbys named
// than stream now: then none returns until its statement's bound ends
// the wait. A role without pg_monitor knows it only when fewer standbys
// stream at all.
func (r Replication) tooFew() bool {
	n, _ := r.streamingNamed()
	return r.waits() && n < r.required()
}

// Replicated is push_appserver_registry_commits_replicated: 1 when a
// commit waits for a standby that streams (a failover to it loses no
// registration answered OK), 0 when it does not though one streams or
// is named, -1 when none streams and none is named, or the server is
// itself a standby.
func (r Replication) Replicated() int {
	switch {
	case r.InRecovery:
		return -1
	case r.waits() && r.Standbys > 0 && !r.tooFew():
		// A commit waits for as many standbys as it names (ANY 2 with
		// one left streaming has none return at all).
		return 1
	case r.Standbys == 0 && !r.waits():
		return -1
	}
	return 0
}

// Risks are the warnings the settings call for, each a sentence that
// names the risk and the settings that remove it; none when a commit
// survives a crash and reaches every standby a failover could go to
// first.
func (r Replication) Risks() []string {
	if r.InRecovery {
		return nil
	}
	var out []string
	ourOwn := fmt.Sprintf("ALTER ROLE %s SET synchronous_commit = on, or ALTER DATABASE %s SET synchronous_commit = on", r.Role, r.Database)
	if r.SyncCommit == "off" {
		out = append(out, fmt.Sprintf("synchronous_commit is off for our sessions (set by %s): a registration answered OK is not yet written to disk, and a crash of PostgreSQL loses it even without a failover; set it to on, for our role or database alone if the server's other users want it off (%s)",
			r.SyncCommitSource, ourOwn))
	}
	switch {
	case r.Standbys > 0 && !r.waits():
		why := "synchronous_standby_names is empty"
		if strings.TrimSpace(r.StandbyNames) != "" {
			why = fmt.Sprintf("synchronous_commit is %s for our sessions (set by %s)", r.SyncCommit, r.SyncCommitSource)
		}
		out = append(out, fmt.Sprintf("%d standby(s) stream from this PostgreSQL server, but commits do not wait for any (%s): after a failover, the registrations answered OK in the moments before the primary failed can be missing, and every push to those devices is refused as to an unknown node (ejabberd then disables push for the user); to make commits wait for a standby, set synchronous_standby_names on the primary (e.g. 'ANY 1 (*)') and keep synchronous_commit at on, remote_write or remote_apply, which may be set for our role or database alone (%s)",
			r.Standbys, why, ourOwn))
	case r.waits() && r.SyncStandbys == 0:
		out = append(out, fmt.Sprintf("synchronous_standby_names (%q) names no standby that streams now: every commit that writes waits for one, and registrations fail after statement_timeout and a second, though PostgreSQL keeps them on this server alone; start the standby it names, or name those that stream (pg_stat_replication's application_name)",
			r.StandbyNames))
	case r.tooFew():
		// One standby of two left (ANY 2, FIRST 2): a commit waits
		// for the one missing as for a named standby that does not
		// stream.
		n, exact := r.streamingNamed()
		streams := fmt.Sprintf("%d of those it names streams", n)
		if !exact {
			streams = fmt.Sprintf("at most %d of those it names streams", n)
		}
		out = append(out, fmt.Sprintf("synchronous_standby_names (%q) has every commit wait for %d standbys, and %s now: every commit that writes waits for another, and registrations fail after statement_timeout and a second, though PostgreSQL keeps them on this server alone; start the standbys it names, or lower the number it waits for",
			r.StandbyNames, r.required(), streams))
	}
	return out
}
