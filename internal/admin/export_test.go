package admin

import (
	"context"
	"time"
)

// Clock is what PruneWith reads the time from and pauses with.
type Clock = clock

// PruneWith is Prune with the clock c.
func PruneWith(ctx context.Context, s Store, typ string, before time.Time, progress Progress, c Clock) (map[string]int, error) {
	return prune(ctx, s, typ, before, progress, c)
}

// PruneGap is the pause after a window whose statement took held.
var PruneGap = pruneGap

// CopyWith is Copy with the clock c.
func CopyWith(ctx context.Context, dst CopyTarget, src CopySource, dryRun bool, progress Progress, c Clock) (CopySummary, error) {
	return copyRegistry(ctx, dst, src, dryRun, progress, c)
}
