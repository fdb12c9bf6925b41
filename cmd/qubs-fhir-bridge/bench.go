package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/perf"
)

// benchLauncher starts the processes of a bench run; tests replace it so
// that the test binary plays the program.
var benchLauncher = perf.Self

// benchFlag is a bench setting with its environment twin, as every flag of
// the program has one.
type benchFlag struct {
	name, env, usage string
	get              func() string
	set              func(string) error
}

func benchFlags(cfg *perf.Config) []benchFlag {
	intFlag := func(name, usage string, p *int) benchFlag {
		return benchFlag{name, "BRIDGE_BENCH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")), usage,
			func() string { return strconv.Itoa(*p) },
			func(s string) error {
				n, err := strconv.Atoi(s)
				if err != nil {
					return fmt.Errorf("want an integer, got %q", s)
				}
				*p = n
				return nil
			}}
	}
	durFlag := func(name, usage string, p *time.Duration) benchFlag {
		return benchFlag{name, "BRIDGE_BENCH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")), usage,
			func() string { return p.String() },
			func(s string) error {
				d, err := time.ParseDuration(s)
				if err != nil {
					return fmt.Errorf("want a duration such as 5s, got %q", s)
				}
				*p = d
				return nil
			}}
	}
	strFlag := func(name, usage string, p *string) benchFlag {
		return benchFlag{name, "BRIDGE_BENCH_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")), usage,
			func() string { return *p },
			func(s string) error { *p = s; return nil }}
	}
	return []benchFlag{
		intFlag("rounds", "bridge/proxy round pairs per workload (medians are reported)", &cfg.Rounds),
		durFlag("duration", "length of one worklist round, per side", &cfg.Duration),
		durFlag("read-duration", "length of one ServiceRequest read round, per side", &cfg.ReadDuration),
		durFlag("warmup", "warm-up per side and workload before the rounds", &cfg.Warmup),
		intFlag("clients", "concurrent clients", &cfg.Clients),
		intFlag("count", "_count of a FHIR page and pageSize of a QUBS page", &cfg.Count),
		intFlag("appointments", "appointments the simulator seeds per domain", &cfg.Appointments),
		{"seed", "BRIDGE_BENCH_SEED", "seed of the simulator's data",
			func() string { return strconv.FormatInt(cfg.Seed, 10) },
			func(s string) error {
				n, err := strconv.ParseInt(s, 10, 64)
				if err != nil {
					return fmt.Errorf("want an integer, got %q", s)
				}
				cfg.Seed = n
				return nil
			}},
		strFlag("domain", "QUBS domain the work goes to", &cfg.Domain),
		intFlag("report-posts", "sequential report POSTs with return=minimal, as many without (each once QUBS has the one before), and as many back to back, after one and the warm-up not counted", &cfg.ReportPosts),
		intFlag("report-warmup", "report POSTs a fresh bridge gets after its first and before the sequential ones, not counted", &cfg.ReportWarmup),
		intFlag("concurrent-posts", "report POSTs sent at once", &cfg.ConcurrentPosts),
		strFlag("bridge-log-level", "BRIDGE_LOG_LEVEL of the bridge under test", &cfg.BridgeLogLevel),
		strFlag("audit-wait", "BRIDGE_AUDIT_WAIT of the bridge under test: auto, commit or queue", &cfg.AuditWait),
		strFlag("audit-journal", "BRIDGE_AUDIT_JOURNAL of the bridge under test: auto, off, or on (a directory of its own)", &cfg.AuditJournal),
		strFlag("artifact-reserve", "BRIDGE_ARTIFACT_RESERVE of the bridge under test (PostgreSQL); empty: serve's default", &cfg.ArtifactReserve),
		strFlag("store", "the bridges' store: empty for SQLite, or a postgres:// URL (a schema per bridge, dropped at the end)", &cfg.Store),
		strFlag("profile", "a directory for the bridge's profiles: CPU of each worklist and read round, heap and allocations after each report phase (go tool pprof); empty: none. Profiling costs the bridge a little CPU", &cfg.ProfileDir),
	}
}

// bench runs the side-by-side benchmark of docs/performance.md and prints
// its table; "bench proxy" (not in the help) is the bare proxy it starts.
func (m *Main) bench(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == perf.ProxyCommand {
		return m.benchProxy(ctx, args[1:])
	}
	cfg := perf.DefaultConfig()
	flags := benchFlags(&cfg)
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	for _, f := range flags {
		fs.Func(f.name, fmt.Sprintf("%s (env %s)", f.usage, f.env), f.set)
	}
	fs.Usage = func() {
		fmt.Fprint(m.Stderr, "usage: qubs-fhir-bridge bench [flags]\n\n"+
			"Runs the bridge and a bare reverse proxy side by side over the QUBS simulator,\n"+
			"each in its own process, and prints the figures of docs/performance.md.\n\n")
		tw := tabwriter.NewWriter(m.Stderr, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  flag\tenvironment\tdefault\tmeaning")
		for _, f := range flags {
			fmt.Fprintf(tw, "  --%s\t%s\t%s\t%s\n", f.name, f.env, f.get(), f.usage)
		}
		tw.Flush()
	}
	// The environment first, so that flags win over it.
	for _, f := range flags {
		if v := m.Getenv(f.env); v != "" {
			if err := f.set(v); err != nil {
				return fmt.Errorf("%s: %w", f.env, err)
			}
		}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(m.Stderr, "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return errUsage
	}
	launch, err := benchLauncher()
	if err != nil {
		return err
	}
	cfg.Launch, cfg.Progress = launch, m.Stderr
	res, err := perf.Run(ctx, cfg)
	if err != nil {
		return err
	}
	res.WriteMarkdown(m.Stdout)
	return nil
}

// benchProxy is the bare reverse proxy of a bench run, in a process of its
// own so that its CPU time is its own. It reaches QUBS with the QUBS_*
// settings serve uses.
func (m *Main) benchProxy(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("bench proxy", flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	listen := fs.String("listen", "127.0.0.1:0", "listen address (loopback)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if !isLoopback(*listen) {
		return errors.New("the bench proxy holds a QUBS token and listens on loopback only")
	}
	secret := m.Getenv("QUBS_CLIENT_SECRET")
	if m.Getenv("QUBS_API_URL") == "" || m.Getenv("QUBS_TOKEN_URL") == "" || m.Getenv("QUBS_CLIENT_ID") == "" || secret == "" {
		return errors.New("the bench proxy needs QUBS_API_URL, QUBS_TOKEN_URL, QUBS_CLIENT_ID and QUBS_CLIENT_SECRET")
	}
	return perf.ServeProxy(ctx, *listen, m.Getenv("QUBS_API_URL"), m.Getenv("QUBS_TOKEN_URL"), m.Getenv("QUBS_CLIENT_ID"), secret, m.Stdout)
}
