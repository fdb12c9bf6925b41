package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os/user"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/qubs-fhir-bridge/qubs-fhir-bridge/store"
)

// errReported ends a command that already told the operator why on its
// own output: main exits 1 without another line.
var errReported = errors.New("reported")

// deliveries runs `qubs-fhir-bridge deliveries list|retry|abandon` against
// BRIDGE_STORE: what an operator does about reports QUBS did not take
// (docs/deliveries.md). Everything it prints is ids, states, error kinds
// and times: no PHI.
func (m *Main) deliveries(ctx context.Context, args []string) error {
	usage := func() {
		fmt.Fprint(m.Stderr, `usage:
  qubs-fhir-bridge deliveries list [--state failed|pending|delivered|superseded] [--domain D] [--limit N]
  qubs-fhir-bridge deliveries retry <domain> <report-id>[/_history/<version>]
  qubs-fhir-bridge deliveries abandon <domain> <report-id>[/_history/<version>]

Flags come before the arguments. Without a version, retry and abandon act on
the report's latest version. BRIDGE_STORE (or --store) names the store.
`)
	}
	if len(args) == 0 {
		usage()
		return errUsage
	}
	sub := args[0]
	opts := commandOptions("deliveries")
	fs := flag.NewFlagSet("deliveries "+sub, flag.ContinueOnError)
	fs.SetOutput(m.Stderr)
	fs.Usage = usage
	opts.register(fs, "store")
	state := fs.String("state", "", "list: only versions in this delivery state")
	domain := fs.String("domain", "", "list: only this QUBS domain")
	limit := fs.Int("limit", store.DefaultSearchLimit, "list: at most this many versions, newest first")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	opts.resolve(m.Getenv)
	var act func(ctx context.Context, st store.Store, domain, id string, v int) error
	switch sub {
	case "list":
		if fs.NArg() > 0 {
			usage()
			return errUsage
		}
	case "retry":
		act = func(ctx context.Context, st store.Store, domain, id string, v int) error {
			return st.RequeueDelivery(ctx, domain, id, v, time.Now())
		}
	case "abandon":
		act = func(ctx context.Context, st store.Store, domain, id string, v int) error {
			return st.AbandonDelivery(ctx, domain, id, v, time.Now())
		}
	default:
		usage()
		return errUsage
	}
	st, err := openStore(ctx, opts.get("store"))
	if err != nil {
		return err
	}
	defer st.Close()
	if act == nil {
		f := store.DeliveryFilter{Domain: *domain, Limit: *limit}
		if *state != "" {
			f.States = []string{*state}
		}
		return m.listDeliveries(ctx, st, f)
	}
	if fs.NArg() != 2 {
		usage()
		return errUsage
	}
	dom, ref := fs.Arg(0), fs.Arg(1)
	id, v, err := parseReportRef(ref)
	if err != nil {
		fmt.Fprintf(m.Stderr, "deliveries %s: %v\n", sub, err)
		return errUsage
	}
	if v == 0 {
		r, err := st.Report(ctx, dom, id)
		if err != nil {
			return m.refused(sub, dom, id, 0, err)
		}
		v = r.Version
	}
	if err := act(ctx, st, dom, id, v); err != nil {
		return m.refused(sub, dom, id, v, err)
	}
	// The change is audited as $redeliver is: an operator changed what
	// QUBS will receive. The version was just read or changed, so its
	// patient is known; a record that cannot be stored is said, loudly,
	// not hidden (the change itself is done).
	if err := auditDeliveryOp(ctx, st, sub, dom, id, v); err != nil {
		fmt.Fprintf(m.Stderr, "deliveries %s: done, but its audit record was not stored: %v\n", sub, err)
		return errReported
	}
	verb := map[string]string{"retry": "queued again, due now", "abandon": "abandoned: it will not be sent"}[sub]
	fmt.Fprintf(m.Stdout, "ok   %s DiagnosticReport/%s/_history/%d %s\n", dom, id, v, verb)
	return nil
}

// refused tells the operator why a retry or abandon did not happen.
func (m *Main) refused(sub, domain, id string, v int, err error) error {
	what := "DiagnosticReport/" + id
	if v > 0 {
		what += "/_history/" + strconv.Itoa(v)
	}
	switch store.KindOf(err) {
	case store.KindNotFound, store.KindConflict:
		fmt.Fprintf(m.Stdout, "fail %s %s %s refused: %s\n", domain, what, sub, cause(err))
		return errReported
	}
	return fmt.Errorf("deliveries %s %s %s: %w", sub, domain, what, err)
}

// cause is a store error's reason without the operation in front.
func cause(err error) string {
	var se *store.Error
	if errors.As(err, &se) && se.Err != nil {
		return se.Err.Error()
	}
	return userMessage(err)
}

// parseReportRef reads "<id>" or "<id>/_history/<version>"; version 0 means
// the latest.
func parseReportRef(s string) (id string, version int, err error) {
	s = strings.TrimPrefix(s, "DiagnosticReport/")
	id, hist, ok := strings.Cut(s, "/_history/")
	if id == "" || strings.Contains(id, "/") {
		return "", 0, fmt.Errorf("%q: want <report-id> or <report-id>/_history/<version>", s)
	}
	if !ok {
		return id, 0, nil
	}
	version, err = strconv.Atoi(hist)
	if err != nil || version < 1 {
		return "", 0, fmt.Errorf("%q: the version must be a positive integer", s)
	}
	return id, version, nil
}

func (m *Main) listDeliveries(ctx context.Context, st store.Store, f store.DeliveryFilter) error {
	list, err := st.ListDeliveries(ctx, f)
	if err != nil {
		if store.KindOf(err) == store.KindInvalid {
			fmt.Fprintf(m.Stderr, "deliveries list: %s\n", cause(err))
			return errUsage
		}
		return fmt.Errorf("listing deliveries: %w", err)
	}
	tw := tabwriter.NewWriter(m.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tREPORT\tVERSION\tAPPOINTMENT\tSTATE\tATTEMPTS\tLAST ERROR\tACCEPTED\tNEXT OR DELIVERED")
	for _, d := range list {
		kind := d.Delivery.LastErrorKind()
		if kind == "" {
			kind = "-"
		}
		when := "-"
		switch {
		case d.Delivery.State == store.DeliveryPending:
			when = "next " + d.Delivery.NextAttemptAt.Format(time.RFC3339)
		case d.Delivery.DeliveredAt != nil:
			when = "delivered " + d.Delivery.DeliveredAt.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\t%s\n", d.Domain, d.ReportID, d.Version, d.AppointmentID,
			d.Delivery.State, d.Delivery.Attempts, kind, d.CreatedAt.Format(time.RFC3339), when)
	}
	return tw.Flush()
}

// auditDeliveryOp records an operator's retry or abandon in the audit
// trail: action U, interaction "operation", agent the operating-system
// user running the command (method "cli"), the report version and its
// patient as entities.
func auditDeliveryOp(ctx context.Context, st store.Store, sub, domain, id string, v int) error {
	r, err := st.ReportVersion(ctx, domain, id, v)
	if err != nil {
		return fmt.Errorf("reading the version: %w", err)
	}
	agent := "cli"
	if u, err := user.Current(); err == nil && u.Username != "" {
		agent = "cli:" + u.Username
	}
	rec := &store.AuditRecord{
		Domain:      domain,
		Action:      store.AuditActionUpdate,
		Interaction: "operation",
		Outcome:     store.AuditOutcomeSuccess,
		AgentID:     agent,
		AgentMethod: "cli",
		NetworkAddr: "localhost",
		EntityRefs:  []string{"DiagnosticReport/" + id + "/_history/" + strconv.Itoa(v)},
		RequestPath: "qubs-fhir-bridge deliveries " + sub,
	}
	if r.PatientRef != "" {
		rec.PatientRefs = []string{r.PatientRef}
	}
	return st.RecordAudit(ctx, rec)
}
