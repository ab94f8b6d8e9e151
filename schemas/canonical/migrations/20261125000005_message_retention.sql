-- Retention of the message store: drop whole monthly partitions that ended
-- before the first day of the month `keep_months` ago, and the idempotency
-- keys of the messages they held. Returns the dropped partitions' names.
CREATE FUNCTION carehub_drop_message_partitions(keep_months integer)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    cutoff timestamptz := (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => keep_months))
                          AT TIME ZONE 'UTC';
    part record;
    upper_bound timestamptz;
BEGIN
    IF keep_months < 1 THEN
        RAISE EXCEPTION 'keep_months must be at least 1 (got %)', keep_months;
    END IF;
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
          FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          JOIN pg_class p ON p.oid = i.inhparent
         WHERE p.relname = 'message'
    LOOP
        -- bound reads: FOR VALUES FROM ('…') TO ('…')
        upper_bound := substring(part.bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
        IF upper_bound <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            RETURN NEXT part.relname;
        END IF;
    END LOOP;
    DELETE FROM message_key WHERE received_at < cutoff;
END;
$$;
