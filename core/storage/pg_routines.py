"""Server-side routines of the PostgreSQL store: the writes that must lock a conversation row first.

Each runs the very statements the store used to send one by one inside BEGIN ... COMMIT, in the same order,
but as one call: one round trip instead of four to six, and atomic like any single statement. PL/pgSQL
functions are VOLATILE by default, so under READ COMMITTED each statement inside takes a fresh snapshot,
exactly as separate statements did: once the conversation row lock is ours, the next statement sees every
message committed by its previous holder (MAX(seq) + 1 is free; end_if_current cannot miss a message).

A missing conversation raises no_data_found (P0002) with the id as DETAIL; the store turns it into KeyError.
Named with a version: a later change adds new functions in a new migration, so instances of the previous
release keep calling the routine they were written against during a rolling deploy.
"""

from __future__ import annotations

# Calls that write start with this comment, so the statement counter counts them as write transactions.
WRITE_CALL = "/* write */ "

_LOCK = """PERFORM 1 FROM conversations WHERE id = {id} FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no conversation %', {id} USING ERRCODE = 'no_data_found', DETAIL = {id}::text;
    END IF;"""

APPEND_MESSAGE = f"""CREATE OR REPLACE FUNCTION lr_append_message_1(
    p_conversation BIGINT, p_role TEXT, p_blocks TEXT, p_author_id TEXT, p_author_name TEXT,
    p_platform_message_id TEXT, p_answered BOOLEAN, p_created_at TIMESTAMPTZ, p_delivered BOOLEAN)
RETURNS SETOF messages LANGUAGE plpgsql AS $$
BEGIN
    {_LOCK.format(id="p_conversation")}
    RETURN QUERY WITH added AS (
        INSERT INTO messages (conversation_id, seq, role, blocks, author_id, author_name, platform,
            platform_message_id, answered, created_at, delivered)
        SELECT c.id, COALESCE((SELECT MAX(m.seq) FROM messages m WHERE m.conversation_id = c.id), 0) + 1,
            p_role, p_blocks, p_author_id, p_author_name, c.platform, p_platform_message_id, p_answered,
            p_created_at, p_delivered
        FROM conversations c WHERE c.id = p_conversation
        ON CONFLICT DO NOTHING RETURNING *)
    SELECT * FROM added;
END $$"""

# Later arrivals are parked on negative seqs (never colliding), the replies slotted in after p_after_seq,
# the parked ones moved back behind them; then what the turn answered is marked answered.
COMPLETE_TURN = f"""CREATE OR REPLACE FUNCTION lr_complete_turn_1(
    p_conversation BIGINT, p_locks BIGINT[], p_after_seq BIGINT, p_answered_up_to BIGINT,
    p_roles TEXT[], p_blocks TEXT[], p_author_ids TEXT[], p_author_names TEXT[], p_platform_message_ids TEXT[],
    p_answered BOOLEAN[], p_created_at TIMESTAMPTZ[])
RETURNS SETOF messages LANGUAGE plpgsql AS $$
DECLARE
    v_lock BIGINT;
    v_parked BIGINT;
BEGIN
    -- p_locks comes sorted: two turns touching the same conversations cannot deadlock.
    FOREACH v_lock IN ARRAY p_locks LOOP
        {_LOCK.format(id="v_lock")}
    END LOOP;
    UPDATE messages SET seq = -seq WHERE conversation_id = p_conversation AND seq > p_after_seq;
    GET DIAGNOSTICS v_parked = ROW_COUNT;
    RETURN QUERY WITH added AS (
        INSERT INTO messages (conversation_id, seq, role, blocks, author_id, author_name, platform,
            platform_message_id, answered, created_at)
        SELECT c.id, p_after_seq + r.n, r.role, r.blocks, r.author_id, r.author_name, c.platform,
            r.platform_message_id, r.answered, r.created_at
        FROM conversations c,
            unnest(p_roles, p_blocks, p_author_ids, p_author_names, p_platform_message_ids, p_answered, p_created_at)
            WITH ORDINALITY AS r(role, blocks, author_id, author_name, platform_message_id, answered, created_at, n)
        WHERE c.id = p_conversation ORDER BY r.n
        RETURNING *)
    SELECT * FROM added;
    IF v_parked > 0 THEN
        UPDATE messages SET seq = -seq + COALESCE(array_length(p_roles, 1), 0)
        WHERE conversation_id = p_conversation AND seq < 0;
    END IF;
    UPDATE messages SET answered = TRUE
    WHERE conversation_id = p_conversation AND seq <= p_answered_up_to AND NOT answered;
END $$"""

# Tool results are stored in the user role without an author: only what a person wrote counts.
END_IF_CURRENT = f"""CREATE OR REPLACE FUNCTION lr_end_if_current_1(
    p_conversation BIGINT, p_ended TEXT, p_reason TEXT, p_explanation TEXT, p_at TIMESTAMPTZ, p_actor TEXT,
    p_active TEXT, p_after_message BIGINT)
RETURNS SETOF conversations LANGUAGE plpgsql AS $$
BEGIN
    {_LOCK.format(id="p_conversation")}
    RETURN QUERY WITH ended AS (
        UPDATE conversations SET status = p_ended, ended_reason = p_reason, ended_explanation = p_explanation,
            ended_at = p_at, ended_by = p_actor
        WHERE id = p_conversation AND status = p_active AND NOT EXISTS (
            SELECT 1 FROM messages WHERE conversation_id = p_conversation AND role = 'user'
            AND author_id IS NOT NULL AND id > p_after_message)
        RETURNING *)
    SELECT * FROM ended;
END $$"""

ROUTINES = (APPEND_MESSAGE, COMPLETE_TURN, END_IF_CURRENT)
