// Opens the dev-mode odds board in Debian's Chromium (driven by
// playwright-core, which never downloads a browser), reports how long the
// page took to show odds and its first live update, then clicks a price of
// an open market and reports the bet slip: the relay's Kafka ack and the
// simulated bookmaker's answer. One JSON line on stdout. Run by the Go test
// TestBoardInChromium, or by hand:
//
//   BOARD_URL=http://127.0.0.1:8000/ SCREENSHOT=/tmp/board.png node board.mjs
import { chromium } from 'playwright-core';

const url = process.env.BOARD_URL;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  const t0 = Date.now();
  await page.goto(url);
  // Odds rendered (from the REST initial render or the subscribe replies).
  await page.waitForFunction(() => document.querySelectorAll('.sel b').length > 0 &&
    [...document.querySelectorAll('.sel b')].every((b) => b.textContent !== ''), null, { timeout: 20000 });
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
    await page.locator('.market:not(.suspended) .sel').nth(bets * 7).click();
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
  const result = {
    state: await page.textContent('#state'),
    matches: await page.locator('.match').count(),
    odds: await page.locator('.sel b').count(),
    channels: Number(await page.textContent('#channels')),
    updates: Number(await page.textContent('#updates')),
    ms_to_odds: tOdds,
    ms_to_first_update: tLive,
    user: await page.textContent('#user'),
    bet_ack: betAck,
    bet_result: betResult,
    bets,
    errors,
  };
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  process.stdout.write(JSON.stringify(result) + '\n');
} finally {
  await browser.close();
}
