import { busContract, memoryHarness, serviceHarness, purgeRedis, purgeNats } from './bus.contract.ts';
import { serviceSuite, SERVICES } from '../helpers/services.ts';

busContract('memory', memoryHarness);
busContract('redis', () => serviceHarness(SERVICES.redis, purgeRedis), await serviceSuite('redis'));
busContract('nats', () => serviceHarness(SERVICES.nats, purgeNats), await serviceSuite('nats'));
