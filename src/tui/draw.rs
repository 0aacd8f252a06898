//! Drawing: a pure function of [`Dashboard`] state. Panels shrink and drop
//! in order of importance so the screen stays readable down to 80×24.

use super::state::{arch_tree, score, CandStatus, Dashboard, Focus, KEPT};
use crate::fmt::fmt_count;
use ratatui::layout::{Alignment, Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Axis, Block, Borders, Chart, Clear, Dataset, Gauge, GraphType, Paragraph, Row, Table, Wrap,
};
use ratatui::Frame;

fn panel(title: &str, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::default().fg(Color::Cyan)
    } else {
        Style::default().fg(Color::DarkGray)
    };
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(Span::styled(
            format!(" {title} "),
            Style::default().add_modifier(Modifier::BOLD),
        ))
}

fn clock(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s / 60 % 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

/// Draws the whole dashboard.
pub fn draw(f: &mut Frame, d: &Dashboard) {
    let area = f.area();
    let tall = area.height >= 36;
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(3),
            Constraint::Percentage(if tall { 34 } else { 38 }),
            Constraint::Min(6),
            Constraint::Length(if tall { 8 } else { 4 }),
            Constraint::Length(1),
        ])
        .split(area);
    header(f, rows[0], d);
    status_row(f, rows[1], d);
    let charts = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(rows[2]);
    best_chart(f, charts[0], d);
    pareto_chart(f, charts[1], d);
    let mid = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(55), Constraint::Percentage(45)])
        .split(rows[3]);
    top_table(f, mid[0], d);
    selected(f, mid[1], d);
    log(f, rows[4], d);
    footer(f, rows[5], d);
    if d.details {
        details(f, area, d);
    }
    if d.help {
        help(f, area);
    }
    if d.confirm_quit {
        let r = centered(area, 44, 5);
        f.render_widget(Clear, r);
        f.render_widget(
            Paragraph::new(
                "Stop the search? It stays resumable.\n\n  y: stop    any other key: go on",
            )
            .block(panel("quit", true)),
            r,
        );
    }
}

fn header(f: &mut Frame, r: Rect, d: &Dashboard) {
    let state = match (&d.finished, d.paused) {
        (Some(reason), _) => format!("finished: {reason}"),
        (None, true) => "paused".into(),
        (None, false) => "running".into(),
    };
    let line = Line::from(vec![
        Span::styled(
            " archgram ",
            Style::default().fg(Color::Black).bg(Color::Cyan),
        ),
        Span::raw(format!(" {}  space {}  {}  ", d.name, d.space, d.strategy)),
        Span::styled(state, Style::default().add_modifier(Modifier::BOLD)),
        Span::raw(match d.winner.and_then(|w| d.cands.get(&w)) {
            Some(c) => {
                let (m, sd) = c.confirmed.unwrap_or_default();
                format!("  winner #{} {m:.4}±{sd:.4}", c.id)
            }
            None => String::new(),
        }),
    ]);
    f.render_widget(Paragraph::new(line), r);
}

fn status_row(f: &mut Frame, r: Rect, d: &Dashboard) {
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([
            Constraint::Percentage(40),
            Constraint::Percentage(30),
            Constraint::Percentage(30),
        ])
        .split(r);
    let ratio = if d.budget > 0 {
        (d.evaluations as f64 / d.budget as f64).min(1.0)
    } else {
        0.0
    };
    let eta = d.eta_secs().map_or("–".into(), clock);
    let (ratio, label) = match d.confirming {
        Some((done, due)) => (
            done as f64 / due.max(1) as f64,
            format!("confirm {done}/{due}"),
        ),
        None => (
            ratio,
            format!(
                "{}/{}  {:.1}/min  ETA {eta}",
                d.evaluations,
                d.budget,
                d.rate_per_min()
            ),
        ),
    };
    f.render_widget(
        Gauge::default()
            .block(panel("progress", false))
            .gauge_style(Style::default().fg(Color::Green))
            .ratio(ratio.min(1.0))
            .label(label),
        cols[0],
    );
    f.render_widget(
        Paragraph::new(format!(
            "hits {}s+{}f  saved {:.0}s",
            d.cache.structural_hits, d.cache.functional_hits, d.cache.seconds_saved
        ))
        .block(panel("cache", false)),
        cols[1],
    );
    f.render_widget(
        Paragraph::new(format!(
            "{} tok/s  {} busy/{}",
            fmt_count(d.tokens_per_sec()),
            d.training(),
            d.workers
        ))
        .block(panel("throughput", false)),
        cols[2],
    );
}

fn bounds(v: impl Iterator<Item = f64> + Clone) -> [f64; 2] {
    let lo = v.clone().fold(f64::INFINITY, f64::min);
    let hi = v.fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() {
        return [0.0, 1.0];
    }
    if hi - lo < 1e-9 {
        return [lo - 0.5, hi + 0.5];
    }
    [lo, hi]
}

fn best_chart(f: &mut Frame, r: Rect, d: &Dashboard) {
    let pts = &d.best_curve;
    let x = [0.0, (d.budget.max(d.evaluations).max(1)) as f64];
    let y = bounds(pts.iter().map(|p| p.1));
    let data = Dataset::default()
        .marker(Marker::Braille)
        .graph_type(GraphType::Line)
        .style(Style::default().fg(Color::Green))
        .data(pts);
    let chart = Chart::new(vec![data])
        .block(panel(
            &[
                Some(match &d.fidelity {
                    Some(fid) => format!("best {} vs evaluations · {fid}", d.metric),
                    None => format!("best {} (single seed) vs evaluations", d.metric),
                }),
                d.surrogate.clone(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" · "),
            false,
        ))
        .x_axis(
            Axis::default()
                .bounds(x)
                .labels(vec![Span::raw("0"), Span::raw(format!("{}", x[1]))]),
        )
        .y_axis(Axis::default().bounds(y).labels(vec![
            Span::raw(format!("{:.3}", y[0])),
            Span::raw(format!("{:.3}", y[1])),
        ]));
    f.render_widget(chart, r);
}

fn pareto_chart(f: &mut Frame, r: Rect, d: &Dashboard) {
    let all: Vec<(f64, f64)> = d
        .ranked()
        .iter()
        .map(|c| (c.active_params, score(c)))
        .collect();
    let front = d.pareto();
    let x = bounds(all.iter().map(|p| p.0));
    let y = bounds(all.iter().map(|p| p.1));
    let chart = Chart::new(vec![
        Dataset::default()
            .marker(Marker::Dot)
            .graph_type(GraphType::Scatter)
            .style(Style::default().fg(Color::DarkGray))
            .data(&all),
        Dataset::default()
            .marker(Marker::Braille)
            .graph_type(GraphType::Line)
            .style(Style::default().fg(Color::Yellow))
            .data(&front),
    ])
    .block(panel(
        &if d.evaluations > KEPT {
            format!("Pareto: score vs active params (the best {KEPT} drawn)")
        } else {
            "Pareto: score vs active params".into()
        },
        false,
    ))
    .x_axis(
        Axis::default()
            .bounds(x)
            .labels(vec![Span::raw(fmt_count(x[0])), Span::raw(fmt_count(x[1]))]),
    )
    .y_axis(Axis::default().bounds(y).labels(vec![
        Span::raw(format!("{:.3}", y[0])),
        Span::raw(format!("{:.3}", y[1])),
    ]));
    f.render_widget(chart, r);
}

fn top_table(f: &mut Frame, r: Rect, d: &Dashboard) {
    let ranked = d.ranked();
    let visible = r.height.saturating_sub(3) as usize;
    let first = d.selected.saturating_sub(visible.saturating_sub(1));
    let rows: Vec<Row> = ranked
        .iter()
        .enumerate()
        .skip(first)
        .take(visible)
        .map(|(i, c)| {
            let style = if i == d.selected {
                Style::default().bg(Color::Blue).fg(Color::White)
            } else {
                Style::default()
            };
            let origin = c.origin.split(':').next().unwrap_or("").to_string();
            Row::new(vec![
                format!("#{}", c.id),
                match c.confirmed {
                    Some((m, sd)) => format!("{m:.4}±{sd:.3}✓"),
                    None => format!("{:.4}", score(c)),
                },
                fmt_count(c.params),
                fmt_count(c.flops),
                origin,
                if c.duplicates > 0 {
                    format!("{}", c.duplicates)
                } else {
                    String::new()
                },
            ])
            .style(style)
        })
        .collect();
    let t = Table::new(
        rows,
        [
            Constraint::Length(5),
            Constraint::Length(if d.winner.is_some() { 13 } else { 7 }),
            Constraint::Length(7),
            Constraint::Length(7),
            Constraint::Min(8),
            Constraint::Length(4),
        ],
    )
    .header(
        Row::new(vec!["id", "score", "params", "FLOPs", "origin", "dups"])
            .style(Style::default().add_modifier(Modifier::BOLD)),
    )
    .block(panel(
        if d.winner.is_some() {
            "top candidates (✓ confirmed mean±sd; others one seed)"
        } else {
            "top candidates (single-seed scores)"
        },
        d.focus == Focus::Top,
    ));
    f.render_widget(t, r);
}

/// Heat-map cell for a load relative to the layer's busiest expert.
fn heat(v: f64, max: f64) -> Span<'static> {
    let x = if max > 0.0 { v / max } else { 0.0 };
    let shade = ["·", "░", "▒", "▓", "█"][((x * 4.0).round() as usize).min(4)];
    let color = if x > 0.8 {
        Color::Red
    } else if x > 0.4 {
        Color::Yellow
    } else {
        Color::Green
    };
    Span::styled(shade.repeat(2), Style::default().fg(color))
}

fn routing_lines(c: &super::state::Cand) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for l in &c.routing {
        let mut spans = vec![Span::raw(format!("L{} {:<5} ", l.layer, l.kind))];
        if l.kind == "mod" || l.kind == "layer_skip" {
            spans.push(Span::raw(format!("skip {:.0}%", 100.0 * l.skip_rate)));
        } else {
            let max = l.load.iter().copied().fold(0.0, f64::max);
            spans.extend(l.load.iter().map(|&v| heat(v, max)));
            spans.push(Span::raw(format!(" drop {:.0}%", 100.0 * l.drop_rate)));
        }
        lines.push(Line::from(spans));
    }
    lines
}

fn selected(f: &mut Frame, r: Rect, d: &Dashboard) {
    let Some(c) = d.selected_cand() else {
        f.render_widget(
            Paragraph::new("no candidate evaluated yet").block(panel("selected", false)),
            r,
        );
        return;
    };
    let mut lines = routing_lines(c);
    lines.extend(arch_tree(&c.arch).into_iter().map(Line::from));
    f.render_widget(
        Paragraph::new(lines).block(panel(&format!("#{} {:.4}", c.id, score(c)), false)),
        r,
    );
}

fn log(f: &mut Frame, r: Rect, d: &Dashboard) {
    let n = r.height.saturating_sub(2) as usize;
    let end = d.log.len().saturating_sub(d.log_scroll);
    let start = end.saturating_sub(n);
    let lines: Vec<Line> = d
        .log
        .range(start..end)
        .map(|l| Line::from(l.as_str()))
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(panel("events", d.focus == Focus::Log)),
        r,
    );
}

fn footer(f: &mut Frame, r: Rect, d: &Dashboard) {
    let keys = if d.live_search {
        " ↑↓/jk select  ⏎ details  ⇥ panel  e export  p pause  ? help  q quit"
    } else {
        " ↑↓/jk select  ⏎ details  ⇥ panel  e export  ? help  q quit"
    };
    let text = if d.message.is_empty() {
        keys.to_string()
    } else {
        format!(" {}", d.message)
    };
    f.render_widget(
        Paragraph::new(text).style(Style::default().fg(Color::DarkGray)),
        r,
    );
}

fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect::new(
        area.x + (area.width - w) / 2,
        area.y + (area.height - h) / 2,
        w,
        h,
    )
}

fn help(f: &mut Frame, area: Rect) {
    let r = centered(area, 58, 14);
    f.render_widget(Clear, r);
    let text = "↑/↓ or j/k   move the selection (or scroll the log)\n\
                Enter        details of the selected candidate\n\
                Tab          switch panel: candidates / events\n\
                e            export the selected candidate (RUN/export)\n\
                p            pause or resume sampling (search only)\n\
                q            quit; in a search, asks, then stops it\n\
                             gracefully (continue: archgram resume)\n\
                ?            this help\n\n\
                Any key closes this window.";
    f.render_widget(
        Paragraph::new(text)
            .block(panel("help", true))
            .alignment(Alignment::Left),
        r,
    );
}

fn details(f: &mut Frame, area: Rect, d: &Dashboard) {
    let Some(c) = d.selected_cand() else { return };
    let r = Rect::new(
        area.x + 2,
        area.y + 1,
        area.width.saturating_sub(4),
        area.height.saturating_sub(2),
    );
    f.render_widget(Clear, r);
    let status = match &c.status {
        CandStatus::Done(s) => format!("{} {s:.4}", d.metric),
        CandStatus::Training => "training".into(),
    };
    let mut lines = vec![
        Line::from(format!(
            "{status}   params {}  active {}  FLOPs/token {}",
            fmt_count(c.params),
            fmt_count(c.active_params),
            fmt_count(c.flops)
        )),
        Line::from(format!(
            "origin: {}   trained in {:.1}s at {} tok/s   merged duplicates: {}",
            c.origin,
            c.wall_secs,
            fmt_count(c.tokens_per_sec),
            c.duplicates
        )),
        Line::from(""),
    ];
    lines.extend(routing_lines(c));
    lines.push(Line::from(""));
    lines.extend(arch_tree(&c.arch).into_iter().map(Line::from));
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(panel(
                &format!("candidate #{} (any key closes)", c.id),
                true,
            )),
        r,
    );
}
