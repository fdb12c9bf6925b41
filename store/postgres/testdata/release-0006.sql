-- A schema at migration 0006 made by the store/postgres of commit 913b45c (the
-- hand-written runner on pgxpool before store/sqlstore), filled with one of
-- everything and dumped with pg_dump --inserts; the schema name removed so
-- that it loads into the search_path's. TestUpgradeFromRelease0006 loads it.
--
--

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
--

SET default_tablespace = '';

SET default_table_access_method = heap;

--
--

CREATE TABLE audit_events (
    domain text NOT NULL,
    id text NOT NULL,
    recorded timestamp with time zone NOT NULL,
    action text NOT NULL,
    interaction text NOT NULL,
    outcome text NOT NULL,
    outcome_desc text DEFAULT ''::text NOT NULL,
    agent_id text DEFAULT ''::text NOT NULL,
    agent_method text DEFAULT ''::text NOT NULL,
    token_id text DEFAULT ''::text NOT NULL,
    network_addr text DEFAULT ''::text NOT NULL,
    patient_refs text DEFAULT '[]'::text NOT NULL,
    entity_refs text DEFAULT '[]'::text NOT NULL,
    query text DEFAULT ''::text NOT NULL,
    correlation_id text DEFAULT ''::text NOT NULL,
    request_path text DEFAULT ''::text NOT NULL,
    CONSTRAINT audit_events_action_check CHECK ((action = ANY (ARRAY['C'::text, 'R'::text, 'U'::text, 'D'::text, 'E'::text]))),
    CONSTRAINT audit_events_outcome_check CHECK ((outcome = ANY (ARRAY['0'::text, '4'::text, '8'::text, '12'::text])))
);

--
--

CREATE TABLE audit_patients (
    domain text NOT NULL,
    patient_ref text NOT NULL,
    recorded timestamp with time zone NOT NULL,
    audit_id text NOT NULL
);

--
--

CREATE TABLE binaries (
    domain text NOT NULL,
    id text NOT NULL,
    content_type text DEFAULT ''::text NOT NULL,
    data bytea,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    purged boolean DEFAULT false NOT NULL
);

--
--

CREATE TABLE delivery_queues (
    domain text NOT NULL,
    appointment_id text NOT NULL,
    accepted bigint DEFAULT 0 NOT NULL,
    due_at timestamp with time zone,
    leased_report text,
    leased_version integer,
    lease_owner text,
    lease_until timestamp with time zone
);

--
--

CREATE TABLE idempotency_keys (
    domain text NOT NULL,
    scope text NOT NULL,
    key text NOT NULL,
    request_hash text DEFAULT ''::text NOT NULL,
    resource_type text DEFAULT ''::text NOT NULL,
    resource_id text DEFAULT ''::text NOT NULL,
    version integer DEFAULT 0 NOT NULL,
    created_at timestamp with time zone NOT NULL
);

--
--

CREATE TABLE jti_claims (
    issuer text NOT NULL,
    jti text NOT NULL,
    expires_at timestamp with time zone NOT NULL
);

--
--

CREATE TABLE report_artifacts (
    domain text NOT NULL,
    report_id text NOT NULL,
    version integer NOT NULL,
    idx integer NOT NULL,
    file_name text DEFAULT ''::text NOT NULL,
    content_type text DEFAULT ''::text NOT NULL,
    size bigint NOT NULL,
    sha256 text NOT NULL,
    data bytea,
    qubs_guid text DEFAULT ''::text NOT NULL,
    uploaded_at timestamp with time zone,
    binary_id text DEFAULT ''::text NOT NULL
);

--
--

CREATE TABLE report_versions (
    domain text NOT NULL,
    report_id text NOT NULL,
    version integer NOT NULL,
    appointment_id text NOT NULL,
    patient_ref text DEFAULT ''::text NOT NULL,
    status text DEFAULT ''::text NOT NULL,
    resource bytea,
    submission bytea,
    purged boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone NOT NULL,
    state text NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    last_error text DEFAULT ''::text NOT NULL,
    report_guid text DEFAULT ''::text NOT NULL,
    delivered_at timestamp with time zone,
    next_attempt_at timestamp with time zone NOT NULL,
    queue_seq bigint NOT NULL,
    CONSTRAINT report_versions_state_check CHECK ((state = ANY (ARRAY['pending'::text, 'delivered'::text, 'failed'::text, 'superseded'::text])))
);

--
--

CREATE TABLE reports (
    domain text NOT NULL,
    id text NOT NULL,
    latest_version integer NOT NULL,
    appointment_id text NOT NULL,
    patient_ref text DEFAULT ''::text NOT NULL,
    status text DEFAULT ''::text NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    queue_due_at timestamp with time zone,
    leased_version integer,
    lease_owner text,
    lease_until timestamp with time zone
);

--
--

CREATE TABLE schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);

--
-- Data for Name: audit_events; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO audit_events VALUES ('acme', 'ae-1', '2025-03-01 09:00:00.123456+00', 'E', 'search-type', '0', '', 'ris', '', '', '', '["Patient/P1","Patient/P2"]', '["ServiceRequest/A1"]', 'ServiceRequest?_count', '', '/fhir/:domain/ServiceRequest');

--
-- Data for Name: audit_patients; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO audit_patients VALUES ('acme', 'Patient/P1', '2025-03-01 09:00:00.123456+00', 'ae-1');
INSERT INTO audit_patients VALUES ('acme', 'Patient/P2', '2025-03-01 09:00:00.123456+00', 'ae-1');

--
-- Data for Name: binaries; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO binaries VALUES ('acme', 'b1', 'application/pdf', '\x62696e617279206279746573', 12, '4f463802bc436efdd9a0c4e8c999ec3d37450657bd50b579d796b58bc9d3f1ef', '2025-03-01 09:00:00.123456+00', false);

--
-- Data for Name: delivery_queues; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO delivery_queues VALUES ('acme', 'A2', 1, '2025-03-01 11:00:00.123456+00', NULL, NULL, NULL, NULL);
INSERT INTO delivery_queues VALUES ('acme', 'A1', 2, '2025-03-01 10:00:00.123456+00', 'r1', 2, 'dead-worker', '2025-03-01 11:10:00.123456+00');

--
-- Data for Name: idempotency_keys; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO idempotency_keys VALUES ('acme', 'DiagnosticReport:create', 'k1', 'h1', 'DiagnosticReport', 'r1', 1, '2025-03-01 09:00:00.123456+00');

--
-- Data for Name: jti_claims; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO jti_claims VALUES ('client-1', 'jti-1', '2100-01-01 00:00:00+00');

--
-- Data for Name: report_artifacts; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO report_artifacts VALUES ('acme', 'r1', 1, 0, 'r1.pdf', 'application/pdf', 32, '2aa8a0f38de994e88107092b3361e2a5be3e5193b07d248a968242f694e35792', '\x255044462d312e34206f6c642d72656c65617365206172746966616374000102', 'att-guid-1', '2025-03-01 09:00:02.123456+00', 'dra-r1-0');
INSERT INTO report_artifacts VALUES ('acme', 'r1', 2, 0, 'r1.pdf', 'application/pdf', 32, '2aa8a0f38de994e88107092b3361e2a5be3e5193b07d248a968242f694e35792', '\x255044462d312e34206f6c642d72656c65617365206172746966616374000102', '', NULL, 'dra-r1-0');

--
-- Data for Name: report_versions; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO report_versions VALUES ('acme', 'r1', 1, 'A1', 'Patient/P1', 'preliminary', '\x7b227265736f7572636554797065223a22446961676e6f737469635265706f7274222c226964223a227231227d', '\x7b2276223a317d', false, '2025-03-01 09:00:00.123456+00', 'delivered', 1, '', 'report-guid-1', '2025-03-01 09:00:03.123456+00', '2025-03-01 09:00:00.123456+00', 1);
INSERT INTO report_versions VALUES ('acme', 'r2', 1, 'A2', 'Patient/P2', 'final', '\x7b227265736f7572636554797065223a22446961676e6f737469635265706f7274222c226964223a227232227d', '\x7b2276223a317d', false, '2025-03-01 11:00:00.123456+00', 'pending', 0, '', '', NULL, '2025-03-01 11:00:00.123456+00', 1);
INSERT INTO report_versions VALUES ('acme', 'r1', 2, 'A1', 'Patient/P1', 'final', '\x7b227265736f7572636554797065223a22446961676e6f737469635265706f7274222c226964223a227231222c22737461747573223a2266696e616c227d', '\x7b2276223a327d', false, '2025-03-01 10:00:00.123456+00', 'pending', 1, '', '', NULL, '2025-03-01 10:00:00.123456+00', 2);

--
-- Data for Name: reports; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO reports VALUES ('acme', 'r1', 2, 'A1', 'Patient/P1', 'final', '2025-03-01 09:00:00.123456+00', '2025-03-01 10:00:00.123456+00', NULL, NULL, NULL, NULL);
INSERT INTO reports VALUES ('acme', 'r2', 1, 'A2', 'Patient/P2', 'final', '2025-03-01 11:00:00.123456+00', '2025-03-01 11:00:00.123456+00', NULL, NULL, NULL, NULL);

--
-- Data for Name: schema_migrations; Type: TABLE DATA; Schema: oldgen; Owner: -
--

INSERT INTO schema_migrations VALUES (1, '0001_init', '2026-12-02 09:44:57.652355+00');
INSERT INTO schema_migrations VALUES (2, '0002_audit', '2026-12-02 09:44:57.652355+00');
INSERT INTO schema_migrations VALUES (3, '0003_appointment_queues', '2026-12-02 09:44:57.652355+00');
INSERT INTO schema_migrations VALUES (4, '0004_drop_unused', '2026-12-02 09:44:57.652355+00');
INSERT INTO schema_migrations VALUES (5, '0005_artifact_binaries', '2026-12-02 09:44:57.652355+00');
INSERT INTO schema_migrations VALUES (6, '0006_audit_patients_lean', '2026-12-02 09:44:57.652355+00');

--
--

ALTER TABLE ONLY audit_events
    ADD CONSTRAINT audit_events_pkey PRIMARY KEY (domain, id);

--
--

ALTER TABLE ONLY audit_patients
    ADD CONSTRAINT audit_patients_search_key PRIMARY KEY (domain, patient_ref, recorded, audit_id);

--
--

ALTER TABLE ONLY binaries
    ADD CONSTRAINT binaries_pkey PRIMARY KEY (domain, id);

--
--

ALTER TABLE ONLY delivery_queues
    ADD CONSTRAINT delivery_queues_pkey PRIMARY KEY (domain, appointment_id);

--
--

ALTER TABLE ONLY idempotency_keys
    ADD CONSTRAINT idempotency_keys_pkey PRIMARY KEY (domain, scope, key);

--
--

ALTER TABLE ONLY jti_claims
    ADD CONSTRAINT jti_claims_pkey PRIMARY KEY (issuer, jti);

--
--

ALTER TABLE ONLY report_artifacts
    ADD CONSTRAINT report_artifacts_pkey PRIMARY KEY (domain, report_id, version, idx);

--
--

ALTER TABLE ONLY report_versions
    ADD CONSTRAINT report_versions_pkey PRIMARY KEY (domain, report_id, version);

--
--

ALTER TABLE ONLY reports
    ADD CONSTRAINT reports_pkey PRIMARY KEY (domain, id);

--
--

ALTER TABLE ONLY schema_migrations
    ADD CONSTRAINT schema_migrations_pkey PRIMARY KEY (version);

--
--

CREATE INDEX audit_events_agent ON audit_events USING btree (domain, agent_id, recorded, id);

--
--

CREATE INDEX audit_events_purge ON audit_events USING btree (recorded);

--
--

CREATE INDEX audit_events_search ON audit_events USING btree (domain, recorded, id);

--
--

CREATE INDEX binaries_purge ON binaries USING btree (created_at) WHERE (NOT purged);

--
--

CREATE INDEX delivery_queues_due ON delivery_queues USING btree (due_at) WHERE (due_at IS NOT NULL);

--
--

CREATE INDEX jti_claims_expiry ON jti_claims USING btree (expires_at);

--
--

CREATE INDEX report_artifacts_binary ON report_artifacts USING btree (domain, binary_id, version) WHERE (binary_id <> ''::text);

--
--

CREATE INDEX report_versions_pending ON report_versions USING btree (domain, report_id, version) WHERE (state = 'pending'::text);

--
--

CREATE INDEX report_versions_purge ON report_versions USING btree (created_at) WHERE (NOT purged);

--
--

CREATE UNIQUE INDEX report_versions_queue ON report_versions USING btree (domain, appointment_id, queue_seq);

--
--

CREATE INDEX report_versions_queue_pending ON report_versions USING btree (domain, appointment_id, queue_seq) WHERE (state = 'pending'::text);

--
--

CREATE INDEX reports_appointment ON reports USING btree (domain, appointment_id);

--
--

CREATE INDEX reports_patient ON reports USING btree (domain, patient_ref);

--
--

CREATE INDEX reports_queue ON reports USING btree (queue_due_at) WHERE (queue_due_at IS NOT NULL);

--
--

CREATE INDEX reports_search ON reports USING btree (domain, created_at, id);

--
--

ALTER TABLE ONLY report_artifacts
    ADD CONSTRAINT report_artifacts_domain_report_id_version_fkey FOREIGN KEY (domain, report_id, version) REFERENCES report_versions(domain, report_id, version);

--
--

ALTER TABLE ONLY report_versions
    ADD CONSTRAINT report_versions_domain_report_id_fkey FOREIGN KEY (domain, report_id) REFERENCES reports(domain, id);

--
--

