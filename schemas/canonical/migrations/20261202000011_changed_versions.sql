-- Same key, other content (issue 14): the content hash decides, and each
-- connector says what follows. HL7 holds the changed copy for review (status
-- 'open', as before); DICOM stores it as a new version under the same key:
-- message_key then names the new version, and the change is recorded here
-- as 'applied', with the version it became (version_id) beside the copy it
-- superseded (message_id).
ALTER TABLE message_conflict DROP CONSTRAINT message_conflict_status_check;
ALTER TABLE message_conflict ADD CONSTRAINT message_conflict_status_check
    CHECK (status IN ('open', 'reviewed', 'applied'));
ALTER TABLE message_conflict ADD COLUMN version_id uuid;
