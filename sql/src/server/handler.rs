//! The per-connection pgwire handlers: startup, simple query, extended query.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{stream, Sink, SinkExt};
use pgwire::api::auth::StartupHandler;
use std::ops::Deref;

use pgwire::api::portal::{Format, Portal, PortalExecutionState};
use pgwire::api::query::{
    send_execution_response, send_query_response, send_ready_for_query, ExtendedQueryHandler,
    SimpleQueryHandler,
};
use pgwire::api::results::{
    DescribePortalResponse, DescribeResponse, DescribeStatementResponse, FieldFormat, FieldInfo,
    QueryResponse, Response, Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, PgWireConnectionState, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult, SEVERITY_ERROR};
use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
use pgwire::messages::extendedquery::{
    Bind, BindComplete, Describe, Execute, Sync as PgSync, TARGET_TYPE_BYTE_PORTAL,
    TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::{
    EmptyQueryResponse, ReadyForQuery, TransactionStatus as WireStatus,
};
use pgwire::messages::simplequery::Query;
use pgwire::messages::PgWireBackendMessage;
use tokio::sync::Mutex;

use super::auth::{Gatekeeper, Startup};
use super::codec;
use crate::error::SqlError;
use crate::executor::stream::{RowSink, Streamed};
use crate::plan::OutputColumn;
use crate::schema::SchemaCache;
use crate::session::{
    self, CommandTag, Description, Session, Statement, StatementResult, TransactionStatus,
};
use crate::types::{DataType, Datum};

/// Pages of rows a streaming statement may run ahead of its connection.
const STREAM_PAGES: usize = 2;

/// A statement prepared with Parse: the parsed statement and what Describe reports.
#[derive(Debug, Clone)]
pub struct Prepared {
    statement: Statement,
    description: Description,
}

/// One client connection's state, shared by its handlers.
pub struct Connection {
    session: Mutex<Session>,
    parser: Arc<Parser>,
}

impl Connection {
    /// A connection running `session`.
    pub fn new(session: Session) -> Connection {
        let parser = Arc::new(Parser {
            schema: session.schema().clone(),
        });
        Connection {
            session: Mutex::new(session),
            parser,
        }
    }

    /// Runs the session as `user`, who has just logged in.
    pub async fn set_user(&self, user: &str) {
        self.session.lock().await.set_user(user);
    }

    /// Ends the session (rolls back an open transaction).
    pub async fn close(&self) {
        self.session.lock().await.close().await;
    }

    async fn wire_status(&self) -> WireStatus {
        match self.session.lock().await.transaction_status() {
            TransactionStatus::Idle => WireStatus::Idle,
            TransactionStatus::InTransaction => WireStatus::Transaction,
            TransactionStatus::Failed => WireStatus::Error,
        }
    }
}

/// The handler set pgwire asks for: the connection itself for queries, and its
/// [`Startup`] for logging in.
pub struct Handlers {
    pub conn: Arc<Connection>,
    pub startup: Arc<Startup>,
}

impl Handlers {
    pub fn new(conn: Arc<Connection>, gate: Arc<Gatekeeper>) -> Handlers {
        let startup = Arc::new(Startup {
            gate,
            conn: conn.clone(),
            certificate_user: std::sync::OnceLock::new(),
        });
        Handlers { conn, startup }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.conn.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.conn.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }
}

fn user_error(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

fn error_info(e: &SqlError) -> ErrorInfo {
    ErrorInfo::new(
        SEVERITY_ERROR.to_owned(),
        e.sqlstate().to_owned(),
        e.to_string(),
    )
}

/// Queues one statement's response (rows with `describe`, the simple protocol's RowDescription)
/// without flushing: the connection flushes once, at ReadyForQuery.
async fn queue_response<C>(client: &mut C, response: Response, describe: bool) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    match response {
        Response::Query(results) => send_query_response(client, results, describe).await,
        Response::Execution(tag)
        | Response::TransactionStart(tag)
        | Response::TransactionEnd(tag) => send_execution_response(client, tag).await,
        Response::Error(e) => {
            client
                .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
                .await?;
            Ok(())
        }
        Response::EmptyQuery => {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
            Ok(())
        }
        Response::CopyIn(_) | Response::CopyOut(_) | Response::CopyBoth(_) => Ok(()),
    }
}

/// Queues a Describe's answer (parameter types, then the row description or NoData) without
/// flushing.
async fn queue_description<C, D>(client: &mut C, described: &D) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    D: DescribeResponse,
{
    if let Some(types) = described.parameters() {
        let oids = types.iter().map(|t| t.oid()).collect();
        client
            .feed(PgWireBackendMessage::ParameterDescription(
                ParameterDescription::new(oids),
            ))
            .await?;
    }
    if described.is_no_data() {
        client
            .feed(PgWireBackendMessage::NoData(NoData::new()))
            .await?;
    } else {
        let fields = described.fields().iter().map(Into::into).collect();
        client
            .feed(PgWireBackendMessage::RowDescription(RowDescription::new(
                fields,
            )))
            .await?;
    }
    Ok(())
}

/// The tag pgwire completes with the number of rows sent, for a row-returning statement.
fn query_tag(tag: CommandTag) -> &'static str {
    match tag {
        CommandTag::Insert(_) => "INSERT 0",
        CommandTag::Update(_) => "UPDATE",
        CommandTag::Delete(_) => "DELETE",
        CommandTag::Show => "SHOW",
        _ => "SELECT",
    }
}

fn execution_tag(tag: CommandTag) -> Tag {
    match tag {
        CommandTag::Insert(n) => Tag::new("INSERT").with_oid(0).with_rows(n),
        CommandTag::Update(n) => Tag::new("UPDATE").with_rows(n),
        CommandTag::Delete(n) => Tag::new("DELETE").with_rows(n),
        CommandTag::Select(n) => Tag::new("SELECT").with_rows(n),
        other => Tag::new(&other.to_string()),
    }
}

/// Turns a statement result into a pgwire response with result columns in `format`.
fn response(
    result: StatementResult,
    format: impl Fn(usize) -> FieldFormat,
) -> Result<Response, SqlError> {
    let Some(columns) = result.columns else {
        return Ok(Response::Execution(execution_tag(result.tag)));
    };
    let fields = Arc::new(codec::fields(&columns, format));
    let rows = result
        .rows
        .iter()
        .map(|row| codec::encode_row(row, &fields, &columns).map_err(user_error))
        .collect::<Vec<_>>();
    let mut query = QueryResponse::new(fields, stream::iter(rows));
    query.set_command_tag(query_tag(result.tag));
    Ok(Response::Query(query))
}

fn format_for(format: &Format, i: usize) -> FieldFormat {
    match format {
        Format::UnifiedText => FieldFormat::Text,
        Format::UnifiedBinary => FieldFormat::Binary,
        Format::Individual(codes) => FieldFormat::from(codes.get(i).copied().unwrap_or(0)),
    }
}

impl Connection {
    /// Runs the statements of a simple Query in order, each streaming its rows to `client` as
    /// it produces them; stops at the first error, which is queued in place of the rest.
    async fn run_simple<C>(&self, client: &mut C, text: &str) -> PgWireResult<()>
    where
        C: Sink<PgWireBackendMessage> + Unpin,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match session::parse(text) {
            Ok(statements) => statements,
            Err(e) => return queue_error(client, &e).await,
        };
        let mut session = self.session.lock().await;
        for stmt in &statements {
            let (sink, rows) = RowSink::new(STREAM_PAGES);
            let run = session.execute_streaming(stmt, &[], &[], sink);
            let delivery = Delivery {
                describe: true,
                format: &|_| FieldFormat::Text,
                described: None,
            };
            if let Err(e) = run_streamed(client, rows, run, delivery).await? {
                return queue_error(client, &e).await;
            }
        }
        Ok(())
    }
}

/// Queues an ErrorResponse for `e`.
async fn queue_error<C>(client: &mut C, e: &SqlError) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    client
        .feed(PgWireBackendMessage::ErrorResponse(error_info(e).into()))
        .await?;
    Ok(())
}

/// How a streamed result goes out.
struct Delivery<'f> {
    /// Send a RowDescription first (the simple protocol; the extended one described it
    /// already).
    describe: bool,
    /// Each column's format.
    format: &'f (dyn Fn(usize) -> FieldFormat + Sync),
    /// What Describe promised (columns, or `None` for no rows), which the result must match;
    /// `None` when nothing was described (the simple protocol).
    described: Option<Option<&'f [OutputColumn]>>,
}

/// Runs `statement`, whose rows stream into `rows`' sender, and queues its result as it comes:
/// RowDescription (per `delivery`) and a DataRow per row, then CommandComplete. A statement
/// that streamed nothing answers as usual ([`response`]). The outer error is the connection's;
/// the inner one the statement's, for the caller to report (after any rows already sent, as
/// PostgreSQL does).
async fn run_streamed<C, F>(
    client: &mut C,
    rows: tokio::sync::mpsc::Receiver<Streamed>,
    statement: F,
    delivery: Delivery<'_>,
) -> PgWireResult<Result<(), SqlError>>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    F: Future<Output = Result<StatementResult, SqlError>>,
{
    let (result, drained) = futures::join!(statement, drain_rows(&mut *client, rows, &delivery));
    let streamed = match drained? {
        Ok(streamed) => streamed,
        Err(e) => return Ok(Err(e)),
    };
    let result = match result {
        Ok(result) => result,
        Err(e) => return Ok(Err(e)),
    };
    if streamed {
        send_execution_response(client, execution_tag(result.tag)).await?;
        return Ok(Ok(()));
    }
    if let Some(described) = delivery.described {
        if let Err(e) = check_same_columns(described, result.columns.as_deref()) {
            return Ok(Err(e));
        }
    }
    match response(result, delivery.format) {
        Ok(response) => queue_response(client, response, delivery.describe).await?,
        Err(e) => return Ok(Err(e)),
    }
    Ok(Ok(()))
}

/// Queues what a streaming statement sends until it is done; whether it streamed a result.
async fn drain_rows<C>(
    client: &mut C,
    mut rows: tokio::sync::mpsc::Receiver<Streamed>,
    delivery: &Delivery<'_>,
) -> PgWireResult<Result<bool, SqlError>>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let mut shape: Option<(Vec<FieldInfo>, Vec<OutputColumn>)> = None;
    while let Some(item) = rows.recv().await {
        match item {
            Streamed::Columns(columns) => {
                if let Some(described) = delivery.described {
                    if let Err(e) = check_same_columns(described, Some(&columns)) {
                        return Ok(Err(e));
                    }
                }
                let fields = codec::fields(&columns, delivery.format);
                if delivery.describe {
                    let description = fields.iter().map(Into::into).collect();
                    client
                        .feed(PgWireBackendMessage::RowDescription(RowDescription::new(
                            description,
                        )))
                        .await?;
                }
                shape = Some((fields, columns));
            }
            Streamed::Rows(page) => {
                let Some((fields, columns)) = &shape else {
                    return Ok(Err(SqlError::Internal("rows before their columns".into())));
                };
                for row in &page {
                    match codec::encode_row(row, fields, columns) {
                        Ok(data) => client.feed(PgWireBackendMessage::DataRow(data)).await?,
                        Err(e) => return Ok(Err(e)),
                    }
                }
            }
        }
    }
    Ok(Ok(shape.is_some()))
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    /// Like pgwire's default, but reports the session's own transaction status in
    /// ReadyForQuery (pgwire's guess cannot know that e.g. a failed COMMIT ended the
    /// transaction).
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        if query.query.chars().all(|c| c == ';' || c.is_whitespace()) {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        } else {
            self.run_simple(client, &query.query).await?;
        }
        let status = self.wire_status().await;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }

    async fn do_query<C>(&self, _client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = match session::parse(query) {
            Ok(statements) => statements,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
        };
        let mut session = self.session.lock().await;
        let mut responses = Vec::with_capacity(statements.len());
        for stmt in &statements {
            let outcome = session
                .execute_statement(stmt, &[])
                .await
                .and_then(|result| response(result, |_| FieldFormat::Text));
            match outcome {
                Ok(r) => responses.push(r),
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// Like pgwire's default, but queues BindComplete instead of flushing it: the response
    /// goes out with the rest of the exchange at Sync or Flush (one segment per round trip,
    /// as PostgreSQL sends, instead of one per message).
    async fn on_bind<C>(&self, client: &mut C, message: Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statement_name = message
            .statement_name
            .as_deref()
            .unwrap_or(pgwire::api::DEFAULT_NAME);
        let portal_name = message
            .portal_name
            .as_deref()
            .unwrap_or(pgwire::api::DEFAULT_NAME);
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) => {
                if !message.parameters.is_empty() {
                    return Err(user_error(SqlError::ProtocolViolation(format!(
                        "bind message supplies {} parameters, but prepared statement \
                         {statement_name:?} requires 0",
                        message.parameters.len()
                    ))));
                }
                client.portal_store().put_empty_portal(portal_name);
            }
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        client
            .feed(PgWireBackendMessage::BindComplete(BindComplete::new()))
            .await?;
        Ok(())
    }

    /// Like pgwire's default, but queues the description for the flush at Sync, like
    /// [`Self::on_bind`] (drivers describe the portal before every Execute).
    async fn on_describe<C>(&self, client: &mut C, message: Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => match client.portal_store().get_statement(name) {
                Some(Entry::Value(stmt)) => {
                    let described = self.do_describe_statement(client, &stmt).await?;
                    queue_description(client, &described).await
                }
                Some(Entry::Empty) => {
                    queue_description(client, &DescribeStatementResponse::no_data()).await
                }
                None => Err(PgWireError::StatementNotFound(name.to_owned())),
            },
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => {
                    let described = self.do_describe_portal(client, &portal).await?;
                    queue_description(client, &described).await
                }
                Some(Entry::Empty) => {
                    queue_description(client, &DescribePortalResponse::no_data()).await
                }
                None => Err(PgWireError::PortalNotFound(name.to_owned())),
            },
            other => Err(PgWireError::InvalidTargetType(other)),
        }
    }

    /// Runs a portal to completion (`max_rows` 0, what drivers send), streaming its rows as
    /// they come (the flush waits for Sync, like [`Self::on_bind`], unless the socket's buffer
    /// fills first). A row-limited Execute takes
    /// pgwire's default path, which keeps the portal open between fetches.
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(portal)) if message.max_rows == 0 => portal,
            _ => return self._on_execute(client, message).await,
        };
        if !matches!(
            portal.state().lock().await.deref(),
            PortalExecutionState::Initial
        ) || !matches!(client.state(), PgWireConnectionState::ReadyForQuery)
        {
            return self._on_execute(client, message).await;
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        // An error leaves the state as pgwire's default does: the connection loop reports it
        // and discards messages until Sync.
        let (params, types) = portal_params(&portal)?;
        let prepared = &portal.statement.statement;
        let format = portal.result_column_format.clone();
        let format = move |i| format_for(&format, i);
        let delivery = Delivery {
            describe: false,
            format: &format,
            described: Some(prepared.description.columns.as_deref()),
        };
        let outcome = {
            let mut session = self.session.lock().await;
            let (sink, rows) = RowSink::new(STREAM_PAGES);
            let run = session.execute_streaming(&prepared.statement, &params, &types, sink);
            run_streamed(client, rows, run, delivery).await?
        };
        outcome.map_err(user_error)?;
        // Run to completion: a second Execute of this portal returns no more rows, as in
        // PostgreSQL.
        *portal.state().lock().await = PortalExecutionState::Finished;
        client.set_state(PgWireConnectionState::ReadyForQuery);
        let status = self.wire_status().await;
        client.set_transaction_status(status);
        Ok(())
    }

    /// Like pgwire's default, but with the session's own transaction status.
    async fn on_sync<C>(&self, client: &mut C, _message: PgSync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
        let status = self.wire_status().await;
        client.set_transaction_status(status);
        client
            .send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(
                status,
            )))
            .await?;
        client.flush().await?;
        Ok(())
    }

    async fn do_query<C>(
        &self,
        _client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let prepared = &portal.statement.statement;
        let (params, types) = portal_params(portal)?;
        let result = self
            .session
            .lock()
            .await
            .execute_prepared(&prepared.statement, &params, &types)
            .await
            .map_err(user_error)?;
        check_same_columns(
            prepared.description.columns.as_deref(),
            result.columns.as_deref(),
        )
        .map_err(user_error)?;
        let format = portal.result_column_format.clone();
        response(result, |i| format_for(&format, i)).map_err(user_error)
    }
}

/// A portal's parameter values, decoded as the types the client declared (else those Parse
/// inferred), and those types.
fn portal_params(portal: &Portal<Prepared>) -> PgWireResult<(Vec<Datum>, Vec<DataType>)> {
    let prepared = &portal.statement.statement;
    let declared = &portal.statement.parameter_types;
    // Parameter types: what the client declared, else what Parse inferred.
    let mut types = Vec::with_capacity(portal.parameters.len());
    for i in 0..portal
        .parameters
        .len()
        .max(prepared.description.params.len())
    {
        let ty = match declared.get(i).and_then(|t| t.as_ref()) {
            Some(t) => codec::from_pg_type(Some(t)).map_err(user_error)?,
            None => DataType::Unknown,
        };
        let ty = if ty == DataType::Unknown {
            prepared
                .description
                .params
                .get(i)
                .copied()
                .unwrap_or(DataType::Text)
        } else {
            ty
        };
        types.push(ty);
    }
    if portal.parameters.len() != prepared.description.params.len() {
        return Err(user_error(SqlError::ProtocolViolation(format!(
            "bind message supplies {} parameters, but prepared statement requires {}",
            portal.parameters.len(),
            prepared.description.params.len()
        ))));
    }
    let params = portal
        .parameters
        .iter()
        .zip(&types)
        .enumerate()
        .map(|(i, (bytes, ty))| {
            let binary = format_for(&portal.parameter_format, i) == FieldFormat::Binary;
            codec::decode_param(bytes.as_deref(), binary, *ty)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(user_error)?;
    Ok((params, types))
}

/// A prepared statement's result columns must not change between Describe and Execute (the
/// client decodes by the described types), as in PostgreSQL.
fn check_same_columns(
    described: Option<&[OutputColumn]>,
    actual: Option<&[OutputColumn]>,
) -> Result<(), SqlError> {
    let same = match (described, actual) {
        (Some(d), Some(a)) => {
            d.len() == a.len()
                && d.iter()
                    .zip(a)
                    .all(|(x, y)| codec::pg_type(x.data_type) == codec::pg_type(y.data_type))
        }
        (None, None) => true,
        _ => false,
    };
    if same {
        Ok(())
    } else {
        Err(SqlError::unsupported(
            "a prepared statement whose result type changed (cached plan must not change result type)",
        ))
    }
}

/// Parses and describes statements for the extended protocol.
pub struct Parser {
    schema: Arc<SchemaCache>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = session::parse(sql).map_err(user_error)?;
        let statement = match (statements.pop(), statements.is_empty()) {
            (None, _) => return Ok(None),
            (Some(statement), true) => statement,
            (Some(_), false) => {
                return Err(user_error(SqlError::Syntax(
                    "cannot insert multiple commands into a prepared statement".into(),
                )))
            }
        };
        let declared = types
            .iter()
            .map(|t| codec::from_pg_type(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(user_error)?;
        let description = session::describe(&self.schema, &statement, &declared)
            .await
            .map_err(user_error)?;
        Ok(Some(Prepared {
            statement,
            description,
        }))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .description
            .params
            .iter()
            .map(|t| codec::pg_type(*t))
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let columns = stmt.description.columns.as_deref().unwrap_or_default();
        Ok(codec::fields(columns, |i| match column_format {
            Some(format) => format_for(format, i),
            None => FieldFormat::Text,
        }))
    }
}
