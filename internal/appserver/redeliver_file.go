package appserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// The local file of held pushes.
//
// At a stop, the pushes waiting for redelivery go to the registry (see
// holdPending). When it refuses them (PostgreSQL read-only: a standby
// reached through a stale address after a failover, or
// default_transaction_read_only during maintenance; PostgreSQL down; SQLite
// failing to write), they go to a small file in the data directory
// instead (Options.HeldFile), which the next start of this server reads
// back into its wait (restoreHeldFile), and from there into the registry
// once it takes writes. The file is removed once each of its pushes is
// safe: written to the registry, or ended here (delivered, expired, gone).
// It is this server's: another instance on the same registry never sees
// it, and may have woken some of its devices meanwhile; a push is a wake,
// so a device woken twice loses nothing.

const (
	// heldFileVersion is the file's format; a file of another is set
	// aside as unreadable.
	heldFileVersion = 1
	// maxHeldFileBytes bounds the file: written at a stop, when time
	// is short, and read at a start. Of the wait's 32 MB it holds the
	// pushes that failed last (the most time left), a few hundred
	// bytes each, some 20,000 of them; the rest are dropped and
	// counted as DropShutdown.
	maxHeldFileBytes = 8 << 20
)

// heldFileContent is the file as written.
type heldFileContent struct {
	Version int              `json:"version"`
	Written time.Time        `json:"written"`
	Pushes  []heldFileRecord `json:"pushes"`
}

// heldFileRecord is one push of the file, with its times on this
// machine's clock, the one that reads it back: Failed is the device's
// latest failure, Deadline when its redelivery window ends (Failed plus
// the window when it was written), and Push.NotBefore the push
// service's Retry-After.
type heldFileRecord struct {
	Failed   time.Time `json:"failed"`
	Deadline time.Time `json:"deadline"`
	Push     heldPush  `json:"push"`
}

// unwrittenPushes is the waiting pushes the registry does not hold as
// they are (a wait that is a moved row's push alone is held: the row
// stays in the registry, this server's, until a write replaces it), the
// latest failed first.
func (r *redeliveries) unwrittenPushes() []heldFileRecord {
	now := r.now()
	r.mu.Lock()
	var out []heldFileRecord
	for key := range r.dirty {
		p := r.pending[key]
		if p == nil {
			continue
		}
		if _, moved := r.fromMove[key]; moved {
			continue
		}
		h := heldPushOf(key, p.n, p.unread, p.secret, p.checked)
		if p.notBefore.After(now) {
			h.NotBefore = p.notBefore
		}
		out = append(out, heldFileRecord{Failed: p.failed, Deadline: p.failed.Add(r.window), Push: h})
	}
	r.mu.Unlock()
	slices.SortFunc(out, func(a, b heldFileRecord) int { return b.Failed.Compare(a.Failed) })
	return out
}

// encodeHeldFile encodes recs, as many as fit in maxHeldFileBytes (the
// first ones), and returns the file's bytes and how many it holds.
// What JSON encodes a heldPush from never fails to encode.
func encodeHeldFile(recs []heldFileRecord, now time.Time) ([]byte, int) {
	head, _ := json.Marshal(heldFileContent{Version: heldFileVersion, Written: now.UTC(), Pushes: []heldFileRecord{}})
	// head ends in `[]}`: the records go between the brackets.
	var b bytes.Buffer
	b.Write(head[:len(head)-2])
	n := 0
	for _, rec := range recs {
		rec.Failed, rec.Deadline = rec.Failed.UTC(), rec.Deadline.UTC()
		line, _ := json.Marshal(rec)
		if b.Len()+len(line)+4 > maxHeldFileBytes {
			break
		}
		if n > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
		b.Write(line)
		n++
	}
	b.WriteString("\n]}\n")
	return b.Bytes(), n
}

// writeFileAtomic replaces path with data, or leaves it as it was: a
// temporary file beside it (mode 0600: the pushes carry tokens and
// secrets), synced, renamed over path, and the directory synced, so that
// a crash or a power cut leaves the old file or the new one, whole.
func writeFileAtomic(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	return syncDir(dir)
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// readHeldFile reads the file at path; an error that wraps
// fs.ErrNotExist means there is none.
func readHeldFile(path string) (heldFileContent, os.FileInfo, error) {
	var c heldFileContent
	f, err := os.Open(path)
	if err != nil {
		return c, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return c, nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, maxHeldFileBytes+1))
	switch {
	case err != nil:
		return c, fi, err
	case len(b) > maxHeldFileBytes:
		return c, fi, fmt.Errorf("larger than %d bytes, which this server never writes", maxHeldFileBytes)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fi, err
	}
	if c.Version != heldFileVersion {
		return c, fi, fmt.Errorf("format version %d, not %d", c.Version, heldFileVersion)
	}
	return c, fi, nil
}

// restoreHeldFile takes the pushes of the held file, if there is one it
// has not read yet, into the wait: at the start, at each look for held
// pushes (the old process of an upgrade in place writes it as the new
// one runs) and before a stop writes its own. Each keeps its deadline: one
// whose window passed while the server was stopped is dropped
// (DropExpiredStopped), not sent late. The file stays until its pushes
// are safe (see heldFileSafe). One that cannot be read is set aside,
// never deleted, and the start goes on.
func (s *Service) restoreHeldFile() {
	r := s.redeliver
	if r.file == "" {
		return
	}
	fi, err := os.Stat(r.file)
	if errors.Is(err, fs.ErrNotExist) || err == nil && r.fileSeen != nil && os.SameFile(fi, r.fileSeen) {
		return
	}
	c, fi, err := readHeldFile(r.file)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		s.setHeldFileAside(fi, err)
		return
	}
	now := r.now()
	restored, late, unreadable, noRoom := 0, 0, 0, 0
	for _, rec := range c.Pushes {
		h := rec.Push
		if h.App == "" && !(h.Unread && h.ByNode) || rec.Failed.IsZero() || rec.Deadline.IsZero() {
			r.failed.Add(1)
			unreadable++
			continue
		}
		key, n, u := h.wait()
		if !now.Before(rec.Deadline) {
			r.mu.Lock()
			r.drop(h.App, DropExpiredStopped, 1)
			r.mu.Unlock()
			late++
			continue
		}
		// Ends at its deadline even if the window grew since, and at
		// the window's end if it shrank.
		failed := rec.Failed
		if end := rec.Deadline.Add(-r.window); end.Before(failed) {
			failed = end
		}
		if !r.restore(key, n, u, h.Secret, h.Checked && h.ByNode, failed, h.NotBefore, false) {
			noRoom++ // counted as DropNoRoom
			continue
		}
		restored++
		r.mu.Lock()
		if r.pending[key] != nil {
			r.fromFile[key] = struct{}{}
		}
		r.mu.Unlock()
	}
	r.fileSeen, r.fileRestored = fi, true
	attrs := []any{"path", r.file, "pushes", restored, "written", c.Written}
	if late > 0 {
		attrs = append(attrs, "expired_while_stopped", late)
	}
	if noRoom > 0 {
		attrs = append(attrs, "no_room", noRoom)
	}
	if unreadable > 0 {
		attrs = append(attrs, "unreadable", unreadable)
	}
	s.logger.Info("pushes waiting for redelivery read back from the file a stop left them in: the registry did not keep them then", attrs...)
}

// setHeldFileAside renames a held file that cannot be read (fi, if it
// could be looked at) out of the way, for an operator to look at: its
// pushes are not sent, and the start goes on.
func (s *Service) setHeldFileAside(fi os.FileInfo, err error) {
	r := s.redeliver
	aside, rerr := setAside(r.file, r.now())
	if rerr != nil {
		// Not read again at each look; a stop that has pushes to
		// keep replaces it.
		r.fileSeen = fi
		s.logger.Error("the file of pushes held for redelivery cannot be read, nor set aside: its pushes are not sent, and a stop that has pushes to keep replaces it",
			"path", r.file, "err", err, "rename_err", rerr)
		return
	}
	s.logger.Error("the file of pushes held for redelivery cannot be read: set aside, its pushes are not sent",
		"path", r.file, "set_aside_as", aside, "err", err)
}

// setAside renames path beside itself, named unreadable with the time,
// and returns the new name.
func setAside(path string, now time.Time) (string, error) {
	aside := fmt.Sprintf("%s.unreadable-%s", path, now.UTC().Format("20060102T150405.000000000Z"))
	if err := os.Rename(path, aside); err != nil {
		return "", err
	}
	syncDir(filepath.Dir(path))
	return aside, nil
}

// heldFileSafe removes the held file read back once each of its pushes
// is safe: written to the registry, or ended here. A file written since
// by another process (the old one of an upgrade) is not this one's to
// remove.
func (s *Service) heldFileSafe() {
	r := s.redeliver
	if !r.fileRestored {
		return
	}
	r.mu.Lock()
	safe := len(r.fromFile) == 0
	r.mu.Unlock()
	if !safe {
		return
	}
	s.removeHeldFile("pushes read back from the file of held pushes are in the registry or ended: file removed")
}

// removeHeldFile removes the held file this server read, unless another
// replaced it since, and logs msg.
func (s *Service) removeHeldFile(msg string) {
	r := s.redeliver
	r.fileRestored = false
	if fi, err := os.Stat(r.file); err != nil || !os.SameFile(fi, r.fileSeen) {
		return
	}
	if err := os.Remove(r.file); err != nil {
		s.logger.Warn("removing the file of held pushes, whose pushes are safe; the next start reads it again, and its pushes may go out twice", "path", r.file, "err", err)
		return
	}
	// Durable, or a power cut brings the file back and its pushes out
	// twice.
	syncDir(filepath.Dir(r.file))
	s.logger.Info(msg, "path", r.file)
}

// keepInFile writes recs, the waiting pushes the registry did not keep
// at a stop, to the held file, and returns how many it holds.
func (s *Service) keepInFile(recs []heldFileRecord) (int, error) {
	r := s.redeliver
	if r.file == "" {
		return 0, errors.New("no file for held pushes configured")
	}
	data, n := encodeHeldFile(recs, r.now())
	if err := writeFileAtomic(r.file, data); err != nil {
		return 0, err
	}
	return n, nil
}

// removeHeldFileOff removes the held file at a start with redelivery off:
// no server would send its pushes, and they carry tokens. One that cannot
// be read is set aside, as with redelivery on.
func (s *Service) removeHeldFileOff() {
	path := s.opts.HeldFile
	if path == "" {
		return
	}
	c, _, err := readHeldFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return
	case err != nil:
		aside, rerr := setAside(path, s.opts.Now())
		s.logger.Error("the file of pushes held for redelivery cannot be read: set aside, its pushes are not sent (redelivery is off)",
			"path", path, "set_aside_as", aside, "err", err, "rename_err", rerr)
		return
	}
	if err := os.Remove(path); err != nil {
		s.logger.Warn("removing the file of pushes held for redelivery, which is off", "path", path, "err", err)
		return
	}
	syncDir(filepath.Dir(path))
	s.logger.Warn("file of pushes held for redelivery removed: redelivery is off, and they are not sent", "path", path, "pushes", len(c.Pushes))
}
