// Opens the dev-mode odds board in Debian's Chromium (driven by
// playwright-core, which never downloads a browser), reports how long the
// page took to show odds and its first live update, then clicks a price of
// an open market and reports the bet slip: the relay's Kafka ack and the
// simulated bookmaker's answer. Then checks the layout at desktop
// (1280×900) and phone (390×844) sizes: no element outside its card, no
// name running into its price, no horizontal scroll, the header whole, the
// bet slip a column on desktop and a bottom sheet on phones; and places a
// bet from the keyboard (Tab to a price, Enter). With FOREIGN_CHANNEL set
// (the Go test keeps producing a record of another shape there), it waits
// until the board has skipped such records and reports that it kept
// updating. With ADD_URL and ADD_CHANNEL set, it asks the Go test (POST
// ADD_URL/add) to produce a new market of a match into Kafka and reports
// how it appears on the open page (no reload: a marker set in the page
// survives), then (POST ADD_URL/remove) that its tombstone takes it off;
// and it waits for a pop-up market of the simulator ("pop_ups").
// Console errors, page errors and failed requests (a 404 favicon)
// are reported in "errors". One JSON line on stdout. Run by the Go test
// TestBoardInChromium, or by hand:
//
//   BOARD_URL=http://127.0.0.1:8000/ SCREENSHOTS=/tmp/board node board.mjs
import { chromium } from 'playwright-core';

const url = process.env.BOARD_URL;
const shots = process.env.SCREENSHOTS;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});

const errors = [];
function watch(page, size) {
  page.on('pageerror', (e) => errors.push(`${size}: page error: ${e}`));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`${size}: console error: ${m.text()}`); });
  page.on('requestfailed', (r) => { if (!r.url().includes('/connection/websocket')) errors.push(`${size}: request failed: ${r.url()} ${r.failure()?.errorText}`); });
  page.on('response', (r) => { if (r.status() >= 400) errors.push(`${size}: ${r.status()} ${r.url()}`); });
}

// layout runs in the page: every problem a user would see, as strings.
function layout() {
  const out = [];
  const vw = document.documentElement.clientWidth;
  const inside = (a, b) => a.left >= b.left - 1 && a.right <= b.right + 1 && a.top >= b.top - 1 && a.bottom <= b.bottom + 1;
  const what = (el) => `${el.tagName.toLowerCase()}.${el.className} "${el.textContent.slice(0, 30)}"`;
  if (document.documentElement.scrollWidth > vw + 1) out.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${vw}`);
  const header = document.querySelector('header');
  for (const el of header.children) {
    const r = el.getBoundingClientRect();
    if (r.right > vw + 1 || r.left < -1) out.push(`header cut off: ${what(el)} at ${r.left}..${r.right} of ${vw}`);
  }
  for (const card of document.querySelectorAll('.match:not([hidden])')) {
    const box = card.getBoundingClientRect();
    for (const el of card.querySelectorAll('*')) {
      if (el.closest('[hidden]')) continue;
      const r = el.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;
      if (!inside(r, box)) out.push(`${what(el)} outside its card (${Math.round(r.left)}..${Math.round(r.right)} in ${Math.round(box.left)}..${Math.round(box.right)})`);
    }
    for (const sel of card.querySelectorAll('.sel')) {
      const name = sel.querySelector('span').getBoundingClientRect(), price = sel.querySelector('b').getBoundingClientRect();
      if (name.right > price.left - 2) out.push(`name runs into price: ${what(sel)}`);
      if (!inside(price, sel.getBoundingClientRect())) out.push(`price outside its button: ${what(sel)}`);
      if (sel.tagName !== 'BUTTON') out.push(`price not a button: ${what(sel)}`);
    }
  }
  const teams = [...document.querySelectorAll('.match:not([hidden]) .teams')].map((t) => t.textContent);
  const dup = teams.filter((t, i) => teams.indexOf(t) !== i);
  if (dup.length) out.push(`fixtures twice: ${dup.join(', ')}`);
  if (!document.querySelector('#stake')) out.push('no stake input');
  return out;
}

async function ready(page) {
  await page.goto(url);
  await page.waitForFunction(() => document.querySelectorAll('.sel b').length > 0 &&
    [...document.querySelectorAll('.sel b')].every((b) => b.textContent !== ''), null, { timeout: 20000 });
}

try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  watch(page, 'desktop');
  const t0 = Date.now();
  await ready(page);
  const tOdds = Date.now() - t0;
  // A live update pushed over the WebSocket.
  await page.waitForFunction(() => Number(document.getElementById('updates').textContent) > 0, null, { timeout: 20000 });
  const tLive = Date.now() - t0;
  await page.waitForFunction(() => Number(document.getElementById('updates').textContent) >= 20, null, { timeout: 20000 });
  // Bets: click a price of an open market; the slip shows the Kafka ack,
  // then the bookmaker's answers. A goal can suspend the market (1002) or
  // move the price (rejected) between render and click: then try another,
  // until one bet is settled.
  let betAck = '', betResult = '', bets = 0;
  while (bets < 5 && !betResult.includes('settled')) {
    await page.locator('.market:not(.suspended) .sel:not(:disabled)').nth(bets * 7).click();
    bets++;
    await page.waitForFunction((n) => { const b = document.querySelectorAll('.bet');
      return b.length === n && !b[0].classList.contains('pending'); }, bets, { timeout: 20000 });
    betAck = await page.textContent('.bet .ack');
    if (betAck.startsWith('in Kafka')) {
      await page.waitForFunction(() => { const b = document.querySelector('.bet');
        return b.classList.contains('settled') || b.classList.contains('rejected'); }, null, { timeout: 20000 });
    }
    betResult = await page.textContent('.bet .result');
  }
  // The stake input: a bet of 12.5 shows as such in the slip.
  await page.fill('#stake', '12.5');
  await page.locator('.market:not(.suspended) .sel:not(:disabled)').first().click();
  await page.waitForFunction(() => document.querySelector('.bet .what').textContent.startsWith('12.5 '), null, { timeout: 5000 });
  const stakeShown = (await page.textContent('.bet .what')).split(' ')[0];

  // Foreign-shaped records: skipped and counted, the board keeps updating.
  let foreign = null;
  if (process.env.FOREIGN_CHANNEL) {
    await page.waitForFunction(() => Number(document.getElementById('skipped').textContent) > 0, null, { timeout: 20000 });
    const at = Number(await page.textContent('#updates'));
    await page.waitForFunction((n) => Number(document.getElementById('updates').textContent) >= n + 20, at, { timeout: 20000 });
    const match = process.env.FOREIGN_CHANNEL.split(':')[3];
    foreign = {
      skipped: Number(await page.textContent('#skipped')),
      skipped_title: await page.getAttribute('#skipped-stat', 'title'),
      updates_after_skip: Number(await page.textContent('#updates')) - at,
      // The match of the foreign record's channel still shows its prices.
      match_prices: await page.locator(`.match:has(.market[data-channel^="odds:"][data-channel*=":${match}:"]) .sel b`).count(),
    };
  }
  // A market added by Kafka mid-match: a new key of the match's map.
  let added = null;
  if (process.env.ADD_URL) {
    const row = `.market[data-channel="${process.env.ADD_CHANNEL}"]`;
    await page.evaluate(() => { window.boardNotReloaded = true; });
    const before = await page.locator(row).count();
    const ask = async (what) => { const r = await fetch(`${process.env.ADD_URL}/${what}`, { method: 'POST' });
      if (!r.ok) throw new Error(`${what}: ${r.status} ${await r.text()}`); };
    const t = Date.now();
    await ask('add');
    await page.waitForSelector(`${row} .sel b`, { timeout: 20000 });
    added = { before, ms_to_appear: Date.now() - t, price: await page.textContent(`${row} .sel b`),
      label: await page.textContent(`${row} .name`) };
    await ask('remove');
    await page.waitForSelector(row, { state: 'detached', timeout: 20000 });
    added.gone = true;
    added.same_page = await page.evaluate(() => window.boardNotReloaded === true);
  }
  // The simulator opens a pop-up market every 5 s.
  const popUp = '.market[data-market="next-corner"], .market[data-market="next-game"], .market[data-market="next-basket"]';
  await page.waitForSelector(popUp, { timeout: 30000 });
  const popUps = await page.locator(popUp).count();
  const desktop = {
    problems: await page.evaluate(layout),
    slip_beside_board: await page.evaluate(() => document.getElementById('board').getBoundingClientRect().right <=
      document.getElementById('slip').getBoundingClientRect().left + 1),
  };
  if (shots) await page.screenshot({ path: `${shots}-desktop.png` });

  const result = {
    state: await page.textContent('#state'),
    matches: await page.locator('.match:not([hidden])').count(),
    odds: await page.locator('.sel b').count(),
    channels: Number(await page.textContent('#channels')),
    updates: Number(await page.textContent('#updates')),
    ms_to_odds: tOdds,
    ms_to_first_update: tLive,
    user: await page.textContent('#user'),
    bet_ack: betAck,
    bet_result: betResult,
    bets,
    stake_shown: stakeShown,
    foreign,
    added,
    pop_ups: popUps,
    desktop,
  };
  await page.close();

  // Phone: the same checks, the slip a bottom sheet, a bet by keyboard.
  const phone = await browser.newPage({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  watch(phone, 'phone');
  await ready(phone);
  const sheet = await phone.evaluate(() => { const r = document.getElementById('slip').getBoundingClientRect();
    return { top: r.top, height: r.height, bottom: r.bottom, vh: innerHeight }; });
  if (shots) await phone.screenshot({ path: `${shots}-phone.png` });
  const sel = phone.locator('.market:not(.suspended) .sel:not(:disabled)').nth(3);
  await sel.focus();
  const focused = await phone.evaluate(() => document.activeElement.tagName + '.' + document.activeElement.className);
  await phone.keyboard.press('Enter');
  await phone.waitForFunction(() => { const b = document.querySelector('.bet'); return b && !b.classList.contains('pending'); }, null, { timeout: 20000 });
  const keyboardAck = await phone.textContent('.bet .ack');
  const sheetOpen = await phone.evaluate(() => document.getElementById('slip').classList.contains('open') &&
    document.getElementById('bets').getBoundingClientRect().height > 0);
  if (shots) await phone.screenshot({ path: `${shots}-phone-slip.png` });
  await phone.click('#slip-toggle');
  result.phone = {
    problems: await phone.evaluate(layout),
    // Closed, the sheet is one bar at the bottom; it opens when a bet is placed.
    sheet_closed_bar: sheet.bottom <= sheet.vh + 1 && sheet.height < 0.15 * sheet.vh,
    sheet_opens: sheetOpen,
    keyboard_focus: focused,
    keyboard_ack: keyboardAck,
  };
  // A narrower phone still fits.
  await phone.setViewportSize({ width: 360, height: 740 });
  result.phone.problems_360 = await phone.evaluate(layout);
  result.errors = errors;
  process.stdout.write(JSON.stringify(result) + '\n');
} finally {
  await browser.close();
}
