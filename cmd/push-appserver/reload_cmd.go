package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/push-appserver/push-appserver/internal/config"
)

const reloadSynopsis = `reload [-config file] [-pid N]

Tells the running server to read its configuration again, as SIGHUP
does (renewed certificates and keys, app options, the log level), for
where no kill command is at hand: a container image without a shell
(kubectl exec POD -- push-appserver reload). The server is the one
whose PID it wrote to push-appserver.pid in the configuration's
data_dir once it served; -pid names another. The server's log says
what the reload applied.`

// pidFileName is the file in data_dir that names the process serving
// with that configuration, for the reload command.
const pidFileName = "push-appserver.pid"

func pidFile(cfg *config.Config) string { return filepath.Join(cfg.DataDir, pidFileName) }

// writePIDFile puts this process's PID in path, replacing the file as a
// whole, so that a reader never sees half of it. The returned file holds
// an exclusive lock on it until it is closed, which the process's end
// does too: the reload command finds a file that nobody holds a server's
// left behind, whatever process has its PID since.
func writePIDFile(path string) (*os.File, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+pidFileName+".*")
	if err != nil {
		return nil, err
	}
	// A file no other process has opened yet, so only a file system
	// without locks refuses it; the reload command cannot tell a left
	// file there either, and goes by the process's command line alone.
	syscall.Flock(int(tmp.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	_, err = fmt.Fprintf(tmp, "%d\n", os.Getpid())
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	return tmp, nil
}

// sharedDataDir warns when another server holds data_dir's PID file, as
// it is about to be replaced by this one's: two servers on one data
// directory (a second unit or container given the same one, a test
// instance started beside the service) run side by side without a word
// otherwise, each with rate limits of its own, one standing by at the XMPP
// server, and the reload command finding only this one from now on. Not
// refused: a rolling update of containers on one volume starts the new
// one before the old one stops, and a process started by an upgrade takes
// its parent's place by design (it is not asked).
func sharedDataDir(cfg *config.Config, logger *slog.Logger) {
	pid, err := readHeldPIDFile(pidFile(cfg))
	if err != nil {
		return
	}
	msg := "another server serves with this data directory (its PID file is held; the PID is as its own PID namespace sees it): the reload command finds only this one from now on"
	if cfg.Database.Driver != "postgres" {
		msg += ", and both write one SQLite registry, each with rate limits of its own; stop the other, or give this one a data_dir of its own"
	}
	logger.Warn(msg, "data_dir", cfg.DataDir, "other_pid", pid)
}

// removePIDFile removes path if it is still the file this process wrote,
// held, then lets go of held. Not if it merely names this process's PID:
// after an upgrade it names the new process, which serves on, and a
// server in another PID namespace on the same data directory (a second
// container on the volume, both PID 1 in their own) writes the same PID
// into a file of its own, which must outlive this process.
func removePIDFile(path string, held *os.File, logger *slog.Logger) {
	defer held.Close()
	ours, err := held.Stat()
	if err != nil {
		return
	}
	if now, err := os.Stat(path); err != nil || !os.SameFile(now, ours) {
		return
	}
	if err := os.Remove(path); err != nil {
		logger.Warn("cannot remove the PID file", "path", path, "err", err)
	}
}

func readPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return parsePID(path, b)
}

func parsePID(path string, b []byte) (int, error) {
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%s does not hold a PID: %q", path, b)
	}
	return pid, nil
}

// errStalePIDFile: nobody holds the PID file's lock, so the server that
// wrote it is gone (killed, or the machine went down) and its PID may be
// any other process's by now.
var errStalePIDFile = errors.New("the server that wrote it is not running")

// readHeldPIDFile reads the PID in path, and fails with errStalePIDFile
// when no process holds the lock writePIDFile took on it. Read and
// checked through one open file, so that a file replaced meanwhile (an
// upgrade) is not read in one version and checked in the other.
func readHeldPIDFile(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return 0, err
	}
	pid, err := parsePID(path, b)
	if err != nil {
		return 0, err
	}
	// A shared lock is what the server's exclusive one refuses; several
	// reload commands at once take it together.
	switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); {
	case err == nil:
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		return pid, fmt.Errorf("PID %d: %w (it left %s behind; its PID may belong to another process by now)", pid, errStalePIDFile, path)
	case errors.Is(err, syscall.EWOULDBLOCK):
		return pid, nil
	default:
		// No locks on this file system: the server could not lock
		// it either. The process's command line is all there is to
		// go by.
		return pid, nil
	}
}

// errNotServer: the process is gone, or it is no server (its PID was
// taken by another process since a server that died wrote it).
var errNotServer = errors.New("not a running push-appserver server")

// checkServer returns nil when process pid is a server ("push-appserver
// serve"), so that a PID file left by a server that died names no
// other process that got its PID.
func checkServer(pid int) error {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("PID %d: %w (no such process)", pid, errNotServer)
	}
	if err != nil {
		return fmt.Errorf("PID %d: %w", pid, err)
	}
	args := bytes.Split(bytes.TrimSuffix(b, []byte{0}), []byte{0})
	if len(args) < 2 || string(args[1]) != "serve" {
		return fmt.Errorf("PID %d: %w (its command line is %q)", pid, errNotServer, bytes.Join(args, []byte{' '}))
	}
	return nil
}

func runReload(args []string, stdout, stderr io.Writer) int {
	f := newFlags("reload", reloadSynopsis, stdout, stderr)
	cfgPath := f.configFlag()
	pidFlag := f.Int("pid", 0, "signal the server with this `PID` rather than the one push-appserver.pid in data_dir names")
	if rest, code, ok := f.parse(args); !ok {
		return code
	} else if len(rest) > 0 || *pidFlag < 0 {
		f.usage(stderr)
		return 2
	}
	pid := *pidFlag
	if pid == 0 {
		// The component secrets are not needed to find the data
		// directory: an env: variable the server's environment alone
		// sets does not stop the command.
		cfg, ok := loadRegistryConfig(*cfgPath, stderr)
		if !ok {
			return 1
		}
		path := pidFile(cfg)
		var err error
		if pid, err = readHeldPIDFile(path); errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(stderr, "push-appserver reload: no server runs with this configuration: %s does not exist (a server writes it once it serves; -config names the server's configuration)\n", path)
			return 1
		} else if errors.Is(err, errStalePIDFile) {
			fmt.Fprintf(stderr, "push-appserver reload: %s names %v: nothing was signalled\n", path, err)
			return 1
		} else if err != nil {
			fmt.Fprintf(stderr, "push-appserver reload: %v\n", err)
			return 1
		}
		if err := checkServer(pid); err != nil {
			fmt.Fprintf(stderr, "push-appserver reload: %s names %v: the server is not running\n", path, err)
			return 1
		}
	} else if err := checkServer(pid); err != nil {
		fmt.Fprintf(stderr, "push-appserver reload: %v\n", err)
		return 1
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		if errors.Is(err, syscall.EPERM) {
			fmt.Fprintf(stderr, "push-appserver reload: not allowed to signal PID %d: run this as the server's user or as root\n", pid)
		} else {
			fmt.Fprintf(stderr, "push-appserver reload: signalling PID %d: %v\n", pid, err)
		}
		return 1
	}
	fmt.Fprintf(stdout, "told the server (PID %d) to reload its configuration; its log says what the reload applied\n", pid)
	return 0
}
