-- Invoices are served as FHIR Invoice: like every other record, a version
-- that each change raises (the ETag and meta.versionId).
ALTER TABLE invoice ADD COLUMN version integer NOT NULL DEFAULT 1;
