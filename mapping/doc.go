// Package mapping turns QUBS pending-reporting appointments into FHIR R4
// resources: a ServiceRequest for the worklist entry and the Patient,
// Practitioners and Organization it references; appointment attachments
// into DocumentReferences, comments into Communications and alerts into
// Flags. The other way, it reads what clients send (DiagnosticReport,
// DocumentReference, Communication) into QUBS report submissions, report
// artifacts and comments, collecting every Issue rather than stopping at
// the first.
//
// Everything here is a pure function of its arguments: no I/O, no context,
// no clock. The field-by-field table, with every system and extension the
// package emits, is MAPPING.md next to this file; it is the project's
// final word on the mapping.
//
// Two rules shape the code:
//
//   - Nothing QUBS sends is dropped silently. A value that has a faithful
//     FHIR home goes there; a value that does not (an unparseable date, a
//     gender string outside FHIR's four codes, the raw JSON of a service
//     item) is kept verbatim in one of this package's extensions, so the
//     appointment can be read back from the resources.
//   - Mapping degrades rather than fails. FromAppointment returns an error
//     only for an appointment id that no FHIR id can carry, and the
//     attachment and comment mappings only for ids that no FHIR id can
//     carry.
//
// FromAppointment builds the worklist resources as samply models, the
// readable statement of the mapping. The server emits them through Map and
// the Mapped encoders instead, which write the same bytes straight from
// the appointment at a tenth of the cost; the tests hold the two to
// byte-identical output.
//
// Ids are per FHIR base, and there is one base per QUBS domain, so no id
// includes the domain.
package mapping

// The bridge's zone table must not depend on the host having tzdata.
import _ "time/tzdata"
